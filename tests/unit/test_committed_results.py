"""The committed results/quick/: what `make results` wrote, whole, and saying how it was made."""

import re
import subprocess
from pathlib import Path

import pandas as pd

from dwlt_utils import paths, results
from dwlt_utils.cli import RESULTS, RESULTS_COMMAND

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "results" / "quick"
TABLES = ("all_records", "double_win", "highest_double_win", "paper_comparison", "sensitivity")
FIGURES = ("std_transfer", "adv_transfer", "data_limited")


def test_the_folder_holds_every_table_and_figure_and_how_they_were_made():
    readme = paths.results_readme(FOLDER).read_text()
    assert f"Written by `{RESULTS_COMMAND}`" in readme
    revision = re.search(r"- revision: (\w+)", readme).group(1)
    known = subprocess.run(["git", "cat-file", "-e", f"{revision}^{{commit}}"], cwd=REPO, capture_output=True)
    assert known.returncode == 0, f"results/quick/ names revision {revision}, which this repository does not hold"
    assert "uncommitted changes" not in readme
    for name in FIGURES:
        assert (FOLDER / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    for name in TABLES:
        assert len(pd.read_csv(FOLDER / f"{name}.csv")) > 0


def test_the_records_are_the_three_seed_chain_of_the_quick_profile():
    records = pd.read_csv(FOLDER / "all_records.csv", keep_default_na=False).astype(results.DTYPES)
    results.to_frame(records.to_dict("records"))  # every row a valid record
    assert set(records.profile) == {"quick"}
    for pretraining, seeds in RESULTS.seeds.items():
        assert set(records[records.pretraining == pretraining].seed) == set(seeds)
    tickets = records[records.ticket == "imp"]
    assert set(tickets.sparsity) == set(RESULTS.sparsities)
    assert set(records.data_fraction) == {1.0, RESULTS.data_fraction}
