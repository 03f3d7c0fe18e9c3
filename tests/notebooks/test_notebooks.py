"""The real notebooks, executed by papermill in the quick profile, judged by the records they leave.

One chain (01 → 06) runs once per session on small parameters; the tests then read its records, its
executed notebooks and their HTML. Bad parameters and missing inputs are run separately and must stop in
the validation cell with one sentence, having written nothing.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest

from dwlt_utils import autoattack, paths, results
from dwlt_utils.cli import render, unclean
from dwlt_utils.corruptions import STAND_IN_CORRUPTIONS, STAND_IN_WORDS
from dwlt_utils.io import unreachable
from dwlt_utils.profiles import QUICK

from executed import NOTEBOOKS, execute, failed_cell, outputs, validation_cell

ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
REPO = NOTEBOOKS.parent
SPARSITY = 0.36  # level 2: the smallest ladder the chain must build

pytestmark = pytest.mark.usefixtures("fashion_mnist")  # the quick profile's source data (tests/conftest.py)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    base = tmp_path_factory.mktemp("chain")
    common = dict(quick=True, run_root=str(base / "runs"), data_root=str(base / "data"))
    executed = base / "executed"
    executed.mkdir()
    started = time.perf_counter()
    execute("01_load_pretrained", executed, **common, pretrainings=["adv"])
    execute("02_imp", executed, **common, pretraining="adv", levels=2, one_shot_sparsities=[0.5])
    execute("03_std_transfer", executed, **common, sparsity=SPARSITY)
    execute("04_adv_transfer", executed, **common, sparsity=SPARSITY, epochs=3, eval_corruptions=True)
    execute("05_data_limited", executed, **common, sparsity=SPARSITY, data_fraction=0.5, epochs=3)
    execute("06_figures", executed, **common, results_dir=str(base / "results"))
    return {
        "base": base,
        "common": common,
        "executed": executed,
        "seconds": time.perf_counter() - started,
        "records": results.load(base / "runs"),
    }


def cell_records(records, notebook):
    return records[records.notebook == notebook]


def test_standard_transfer_records(chain):
    rows = cell_records(chain["records"], "03_std_transfer")
    assert set(rows.ticket) == {"imp", "dense"} and set(rows.metric) == {"SA"}
    assert rows.value.between(0, 100).all()
    assert (rows.profile == "quick").all() and (rows.dataset == "digits").all() and (rows.stands_for == "cifar10").all()
    ticket, dense = rows[rows.ticket == "imp"], rows[rows.ticket == "dense"]
    assert (ticket.sparsity == 0.36).all() and (ticket.level == 2).all()  # as printed, so == 0.36 matches
    assert (dense.sparsity == 0).all() and (dense.level == 0).all()
    assert (rows.deviations == "").all()  # the quick profile's own recipe, followed exactly


def test_adversarial_transfer_records(chain):
    rows = cell_records(chain["records"], "04_adv_transfer")
    assert set(zip(rows.metric, rows.checkpoint)) == {
        ("SA", "best_sa"),
        ("RA", "best_sa"),
        ("SA", "best_ra"),
        ("RA", "best_ra"),
    }
    assert rows.value.between(0, 100).all()
    for (_, _), cell in rows.groupby(["ticket", "checkpoint"]):
        sa, ra = cell[cell.metric == "SA"].value.item(), cell[cell.metric == "RA"].value.item()
        assert ra <= sa
    assert (rows[rows.ticket == "imp"].sparsity == 0.36).all()
    assert (rows[rows.ticket == "dense"].sparsity == 0).all()
    assert (rows[rows.metric == "RA"].attack.str.startswith("linf PGD-20 eps=8/255")).all()
    assert (rows.deviations == "3 epochs instead of 6").all()  # a shortened run says so in every record
    assert (rows.profile == "quick").all()


@pytest.mark.slow  # AutoAttack's published settings take half a minute per checkpoint on a CPU
def test_autoattack_runs_beside_pgd20_and_never_finds_more_robustness(chain):
    out = chain["base"] / "autoattack"
    out.mkdir()
    shown = execute("04_adv_transfer", out, **chain["common"], sparsity=SPARSITY, epochs=3, eval_attack="autoattack")
    table = autoattack.side_by_side(results.load(chain["base"] / "runs", paths.AUTOATTACK_RECORDS))
    print(table[["ticket", "checkpoint", "images", "RA_pgd", "RA_autoattack", "gap"]].to_string())
    assert sorted(zip(table.ticket, table.checkpoint)) == [
        ("dense", "best_ra"),
        ("dense", "best_sa"),
        ("imp", "best_ra"),
        ("imp", "best_sa"),
    ]
    assert (table.images == QUICK.autoattack_images).all()
    assert (table.RA_autoattack <= table.RA_pgd).all()
    assert (table.RA_both <= table[["RA_pgd", "RA_autoattack"]].min(axis=1)).all()  # per image, never above either
    # The check stays apart from the cell's records, which the decision reads, and reruns read it back
    assert results.load(chain["base"] / "runs").equals(chain["records"])
    assert any("RA_autoattack" in o["data"]["text/html"] for o in outputs(shown, "text/html"))
    figures = execute("06_figures", out, **chain["common"], results_dir=str(out / "results"))
    assert any("2 checked, " in "".join(o.get("text", "")) for c in figures.cells for o in c.get("outputs", []))
    assert (out / "results" / "quick" / "autoattack.csv").is_file()


def test_adversarial_cells_are_tested_on_corrupted_images_apart_from_their_records(chain):
    corrupted = results.load(chain["base"] / "runs", paths.CORRUPTION_RECORDS)
    clean = cell_records(chain["records"], "04_adv_transfer")
    assert set(corrupted.run_id) == set(clean.run_id) and set(clean.corruption) == {""}
    assert set(corrupted.corruption) == set(STAND_IN_CORRUPTIONS) and set(corrupted.severity) == {1, 2, 3, 4, 5}
    assert len(corrupted) == len(clean) * len(STAND_IN_CORRUPTIONS) * 5  # every clean value, on every set
    assert (corrupted.deviations == f"3 epochs instead of 6; {STAND_IN_WORDS}").all()
    shown = nbformat.read(chain["executed"] / "04_adv_transfer.ipynb", as_version=4)
    assert any("severity" in o["data"]["text/html"] for o in outputs(shown, "text/html"))


def test_data_limited_records_and_the_images_they_used(chain):
    rows = cell_records(chain["records"], "05_data_limited")
    assert set(rows.regime) == {"std", "adv"} and (rows.data_fraction == 0.5).all()
    assert rows.value.between(0, 100).all()
    run = chain["base"] / "runs" / rows.run_id.iloc[0]
    assert json.loads((run / "train_indices.json").read_text()) == list(range(598))  # int(1,197 × 0.5), first N


def test_rerunning_a_cell_never_duplicates_its_records(chain):
    before = cell_records(chain["records"], "04_adv_transfer")
    started = time.perf_counter()
    execute("04_adv_transfer", chain["base"], **chain["common"], sparsity=SPARSITY, epochs=3)
    assert time.perf_counter() - started < 30  # read from disk, not retrained
    again = cell_records(results.load(chain["base"] / "runs"), "04_adv_transfer")
    assert len(again) == len(before)
    execute(
        "04_adv_transfer",
        chain["base"],
        **chain["common"],
        sparsity=SPARSITY,
        epochs=3,
        force=True,
        dense_baseline=False,
    )
    forced = cell_records(results.load(chain["base"] / "runs"), "04_adv_transfer")
    assert len(forced) == len(before)
    retrained = forced[forced.ticket == "imp"].timestamp
    assert set(retrained).isdisjoint(set(before[before.ticket == "imp"].timestamp))  # replaced, not kept


def run_root_files(run_root):
    """Every file a run root holds but the executed notebooks, with its bytes and modification time."""
    return {
        str(path.relative_to(run_root)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(run_root.rglob("*"))
        if path.is_file() and "executed" not in path.relative_to(run_root).parts
    }


def test_a_row_of_each_06_table_is_made_by_its_commands_and_they_find_it_done(chain):
    """06's tables say how each row is made: papermill commands, which on the run root that made the row
    find every run done and change nothing there."""
    tables = chain["base"] / "results" / "quick"
    rows = {
        name: pd.read_csv(tables / f"{name}.csv") for name in ("double_win", "highest_double_win", "paper_comparison")
    }
    # The data-limited group: one notebook 05 command makes both regimes, and the ticket's brings its dense model.
    limited = {name: table[table.data_fraction == 0.5] for name, table in rows.items()}
    chosen = [limited["double_win"].commands.iloc[0], limited["highest_double_win"].commands.iloc[0]]
    chosen.append(limited["paper_comparison"].commands.iloc[0])
    for line in chosen:
        assert line.count("papermill ") == 1 and " && papermill notebooks/05_data_limited.ipynb " in line
    # A paper cell not reproduced yet names the search that would reproduce it.
    paper = rows["paper_comparison"]
    assert paper[paper.profile == "paper"].commands.str.startswith("python -m dwlt_utils.cli search ").all()
    # Full-data rows name notebooks 03 and 04 (their commands are `create` read backwards: tests/unit).
    full = rows["highest_double_win"][rows["highest_double_win"].data_fraction == 1.0].commands.iloc[0]
    notebooks = {command.split()[1] for command in full.split(" && ")[1:]}
    assert notebooks == {"notebooks/03_std_transfer.ipynb", "notebooks/04_adv_transfer.ipynb"}
    run_root = chain["base"] / "runs"
    before = run_root_files(run_root)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # papermill, as installed
    for line in dict.fromkeys(chosen):  # each row's line as a shell runs it, from the checkout's root
        assert line.startswith("mkdir -p ") and f"-p run_root {run_root}" in line
        done = subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    assert run_root_files(run_root) == before


def test_figures_notebook_shows_every_figure_and_the_paper_numbers(chain):
    nb = nbformat.read(chain["executed"] / "06_figures.ipynb", as_version=4)
    assert len(outputs(nb, "image/png")) == 4  # standard, adversarial, data-limited transfer; corrupted images
    html = render([chain["executed"] / "06_figures.ipynb"], chain["base"] / "html")[0].read_text()
    for number in ("89.26", "73.79", "79.03", "91.41", "83.22"):
        assert number in html
    assert "QUICK PROFILE" in html and "not reproduced yet" in html
    assert "no records for standard, fast_adv" in html  # what the figures leave out, in words
    for table in ("all_records", "highest_double_win", "double_win", "paper_comparison", "corruption_accuracy"):
        assert (chain["base"] / "results" / "quick" / f"{table}.csv").is_file()


def test_headless_runs_print_a_line_per_training_and_draw_its_curves(chain):
    runs = {"01_load_pretrained": 1, "02_imp": 1, "03_std_transfer": 2, "04_adv_transfer": 2, "05_data_limited": 4}
    for name, trainings in runs.items():
        nb = nbformat.read(chain["executed"] / f"{name}.ipynb", as_version=4)
        streams = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"]
        assert [o.text for o in streams if o.name == "stderr"] == [], name  # no progress bars in the page
        finished = [
            line for o in streams for line in o.text.splitlines() if re.search(r": epochs? \S+ of \d+ in ", line)
        ]
        assert len(finished) == trainings, (name, finished)
        if name != "01_load_pretrained" and name != "02_imp":  # training curves, then the cell's curve
            assert len(outputs(nb, "image/png")) == 2, name


def test_every_notebook_executes_and_renders_to_html(chain):
    executed = sorted(chain["executed"].glob("*.ipynb"))
    assert [p.stem for p in executed] == [p.stem for p in ALL]
    html = render(executed, chain["base"] / "html")
    assert all(p.is_file() and p.stat().st_size > 10_000 for p in html)
    print(f"chain 01→06 on small parameters: {chain['seconds']:.0f} s")


@pytest.mark.parametrize(
    "name, parameters, message",
    [
        # One refusal per notebook runs in the default suite; the unit tests check every sentence, so the rest run
        # through papermill in the slow suite.
        ("04_adv_transfer", {"sparsity": 0.5}, r"Sparsity 0.5 is not on the IMP ladder .*level 3 \(0.4880\)"),
        ("03_std_transfer", {"pretraining": "moco"}, r"Unknown pre-training 'moco'; accepted: standard, fast_adv, adv"),
        ("05_data_limited", {"data_fraction": 1.5}, r"data_fraction must be a number in \(0, 1\]; got 1.5"),
        ("02_imp", {"levels": 50}, r"levels must be an integer in \[0, 40\]; got 50"),
        ("06_figures", {}, r"^MissingInputError: No records of the quick profile under .*runs: check run_root"),
        # A parameter the notebook does not have stops too, instead of passing as results
        (
            "03_std_transfer",
            {"eps_255": -8},
            r"^InputError: Unknown parameter eps_255: this notebook takes quick, seed,",
        ),
        *(
            pytest.param(*case, marks=pytest.mark.slow)
            for case in [
                ("04_adv_transfer", {"dataset": "imagenet"}, r"Unknown data set 'imagenet'; accepted: cifar10, "),
                ("04_adv_transfer", {"eps_255": "8/255"}, r"eps_255 must be a number in \[0, 255\]; got '8/255'"),
                ("04_adv_transfer", {"resolution": 64}, r"Unknown resolution 64; accepted: 224, 32\."),
                (
                    "03_std_transfer",
                    {"dataset": "visda17", "regimes": ["adv"]},
                    r"VisDA-2017 is in standard transfer only",
                ),
                ("03_std_transfer", {"device": "cpu", "torch_compile": True}, r"CUDA graphs are for CUDA devices"),
                (
                    "05_data_limited",
                    {"data_fraction": 0.001},
                    r"1 image, too few .* smallest data_fraction that trains is 0.0017",
                ),
                (
                    "02_imp",
                    {"pretraining": "adv", "source_eps_255": 3},
                    r"quick profile pre-trains its robust sources at ε = 4",
                ),
            ]
        ),
    ],
)
def test_bad_parameters_stop_in_the_validation_cell_and_write_nothing(tmp_path, name, parameters, message):
    run_root = tmp_path / "runs"
    with pytest.raises(pm.PapermillExecutionError):
        execute(name, tmp_path, quick=True, run_root=str(run_root), data_root=str(tmp_path / "data"), **parameters)
    nb = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
    source, error = failed_cell(nb)
    assert source == validation_cell(name)
    sentence = f"{error['ename']}: {error['evalue']}"
    assert re.search(message, sentence), sentence
    assert error["traceback"] == [sentence]  # one sentence, no traceback
    assert not run_root.exists()


def test_a_run_root_that_is_a_file_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "runs").write_text("a file where the run root should be")
    with pytest.raises(pm.PapermillExecutionError):
        execute("01_load_pretrained", tmp_path, quick=True, run_root=str(tmp_path / "runs"), pretrainings=["adv"])
    source, error = failed_cell(nbformat.read(tmp_path / "01_load_pretrained.ipynb", as_version=4))
    assert source == validation_cell("01_load_pretrained")
    assert error["traceback"] == [
        f"InputError: run_root {tmp_path / 'runs'} is a file, not a folder; give a folder (it is created when missing)."
    ]


def test_the_cards_command_without_data_weights_or_network_says_what_is_missing(tmp_path):
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", str(NOTEBOOKS / "04_adv_transfer.ipynb"), "-p", "sparsity", "0.9141"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode != 0 and elapsed < 60
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("MissingInputError: Cannot run this cell: ")
    assert "resnet50_linf_eps4.0.ckpt" in last and "01_load_pretrained.ipynb" in last  # the weights, and how
    assert "&& papermill notebooks/02_imp.ipynb" in last and "-p levels 11" in last  # the ticket, and how
    if unreachable("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", timeout=5):
        assert "cifar-10-batches-py" in last and "put data_batch_1" in last  # the data set, and where it goes
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_help_lists_every_parameter_with_type_default_and_help(path):
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", "--help-notebook", str(path)], capture_output=True, text=True, check=True
    )
    nb = nbformat.read(path, as_version=4)
    source = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for line in source.splitlines():
        name, annotation, default, help_text = re.match(r"^(\w+): (\w+) = (.+?)  # (.+)$", line).groups()
        shown = re.search(rf"^  {name}: {annotation} \(default {re.escape(default)}\)\s+(.+)$", proc.stdout, re.M)
        assert shown, f"{name} is not listed by --help-notebook"
        assert help_text.startswith(shown.group(1).strip()[:20])


def test_committed_notebooks_are_clean(tmp_path):
    assert [problem for path in ALL for problem in unclean(path)] == []
    dirty = nbformat.read(ALL[0], as_version=4)
    dirty.cells[1].outputs = [nbformat.v4.new_output("stream", text="x")]
    del dirty.metadata["kernelspec"]
    dirty.cells.append(nbformat.v4.new_markdown_cell("## A section\n\n## Another\nexplained"))
    nbformat.write(dirty, tmp_path / "dirty.ipynb")
    problems = unclean(tmp_path / "dirty.ipynb")
    assert len(problems) == 3 and problems[-1].endswith("the heading '## A section' with no sentence under it")
