"""Notebook 06 on a run root where one run directory cannot be read: it stops naming it, and goes on without
it only when told to, naming it again."""

from __future__ import annotations

import re

import nbformat
import pandas as pd
import papermill as pm
import pytest

from dwlt_utils import results
from dwlt_utils.pruning import printed_sparsity

from executed import execute, failed_cell, validation_cell


def quick_records(level: int) -> list[dict]:
    """The three records the decision reads for one level of a quick-profile ladder (0: the dense model)."""
    return [
        results.make_record(
            notebook="04_adv_transfer",
            profile="quick",
            pretraining="adv",
            dataset="digits",
            stands_for="cifar10",
            regime=regime,
            data_fraction=1.0,
            subset="first",
            ticket="imp" if level else "dense",
            level=level,
            sparsity=printed_sparsity(level),
            metric=metric,
            checkpoint="best_sa" if regime == "std" else "best_ra",
            seed=1,
            value=value,
            attack="pgd" if metric == "RA" else "",
            sparsity_denominator="all",
            device="cpu",
            precision="fp32",
            git_rev="",
            run_id=f"run-{level}",
            config_hash="x",
            wall_s=1.0,
        )
        for regime, metric, value in (("std", "SA", 90.0), ("adv", "SA", 80.0), ("adv", "RA", 40.0))
    ]


def test_06_stops_naming_a_run_directory_it_cannot_read_unless_told_to_go_on(tmp_path):
    run_root = tmp_path / "runs"
    for level in (0, 1, 2):
        results.write_records(run_root / "transfer" / f"level{level}" / "seed_1", quick_records(level))
    damaged = run_root / "transfer" / "damaged" / "seed_1" / "records.csv"
    damaged.parent.mkdir(parents=True)
    damaged.write_text("metric,value\nSA,90\n")
    cannot_read = f"Cannot read one run directory under {run_root}: {damaged} has the wrong columns"
    common = dict(quick=True, run_root=str(run_root), results_dir=str(tmp_path / "results"))

    with pytest.raises(pm.PapermillExecutionError):
        execute("06_figures", tmp_path, **common)
    source, error = failed_cell(nbformat.read(tmp_path / "06_figures.ipynb", as_version=4))
    assert source == validation_cell("06_figures")
    assert error["traceback"] == [f"{error['ename']}: {error['evalue']}"]  # one sentence, no traceback
    assert error["evalue"].startswith(cannot_read)
    assert error["evalue"].endswith("; pass -p skip_unreadable True to go on without them.")
    assert not (tmp_path / "results").exists()

    nb = execute("06_figures", tmp_path, **common, skip_unreadable=True)
    validation = next(c for c in nb.cells if c.source == validation_cell("06_figures"))
    said = "".join(o.get("text", "") for o in validation.outputs)
    assert re.search(rf"^{re.escape(cannot_read)} .*; left out\.$", said, re.M), said
    assert len(pd.read_csv(tmp_path / "results" / "quick" / "all_records.csv")) == 9
