from pathlib import Path

import pandas as pd
import pytest

from dwlt_utils import report
from dwlt_utils.errors import InputError, MissingInputError
from dwlt_utils.profiles import PAPER, QUICK


def test_report_options_and_notes():
    report.check_options(tol=0.5, adv_checkpoint="best_sa")
    with pytest.raises(InputError, match="tol"):
        report.check_options(tol=-1, adv_checkpoint="best_ra")
    with pytest.raises(InputError, match="adv_checkpoint"):
        report.check_options(tol=0, adv_checkpoint="last")
    empty = report.profile_records(Path("/nonexistent"), "paper")
    assert empty.empty
    notes = report.figure_notes(empty, PAPER, "std")
    assert notes == [f"Standard transfer, {d}: no records." for d in ("cifar10", "cifar100", "svhn")]
    assert "CIFAR-10 only" in report.figure_notes(empty, QUICK, "adv")[-1]
    assert "05_data_limited" in report.figure_notes(empty, PAPER, "data-limited")[0]
    _, _, comparison = report.decide(empty, Path("/nonexistent"), {"run_root": "r", "data_root": "data"}, tol=0)
    table = report.paper_table(comparison)
    assert list(table["paper: highest double-win (%)"]) == [89.26, 73.79, 89.26, 79.03, 91.41, 83.22]
    assert set(table.note) == {"not reproduced yet"} and isinstance(table, pd.DataFrame)
    # a paper cell not reproduced yet names the search that would reproduce it, where 06 read its records
    assert (
        table.commands[0]
        == "python -m dwlt_utils.cli search --pretraining standard --dataset cifar10 --seeds 1 -p run_root r"
    )


def test_06_names_every_group_whose_ladder_fails_below_its_threshold():
    from dwlt_utils import results

    rows = [
        results.make_record(
            notebook="04_adv_transfer",
            profile="quick",
            pretraining="adv",
            dataset="digits",
            stands_for="cifar10",
            regime=regime,
            data_fraction=1.0,
            subset="first",
            ticket="dense" if level == 0 else "imp",
            level=level,
            sparsity=round(1 - 0.8**level, 4),
            metric=metric,
            checkpoint="best_sa" if regime == "std" else "best_ra",
            seed=1,
            value=value - (level == 1),  # level 1 loses by a point, level 2 wins
            attack="pgd" if metric == "RA" else "",
            sparsity_denominator="all",
            device="cpu",
            precision="fp32",
            git_rev="",
            run_id=f"run-{level}-{regime}",
            config_hash="x",
            wall_s=1.0,
        )
        for level in (0, 1, 2)
        for regime, metric, value in (("std", "SA", 90.0), ("adv", "SA", 80.0), ("adv", "RA", 40.0))
    ]
    highest = results.highest_double_win(results.to_frame(rows), tol=0, adv_checkpoint="best_ra")
    assert report.non_monotone(highest) == [
        "adv on cifar10 (quick profile, data fraction 1): level 1 is not double-win but level 2 above it is; a "
        "search that bisects the ladder assumes this never happens."
    ]


def test_tables_written_under_a_run_root_are_not_read_back_as_records(tmp_path):
    from dwlt_utils import results

    records = results.to_frame([])
    written = report.write_tables(
        tmp_path,
        "quick",
        records=records,
        thresholds=pd.DataFrame(),
        decisions=pd.DataFrame(),
        comparison=pd.DataFrame(),
    )
    names = ["all_records.csv", "highest_double_win.csv", "double_win.csv", "paper_comparison.csv"]
    assert [p.name for p in written] == names
    assert results.load(tmp_path).empty


def test_figures_refuse_an_empty_run_root_and_never_shrink_tables_unasked(tmp_path):
    from dwlt_utils import results

    with pytest.raises(
        MissingInputError, match=r"^No records of the quick profile of seed 2 under /typo: check run_root"
    ):
        report.require_records(report.profile_records(Path("/typo"), "quick", seed=2), Path("/typo"), "quick", seed=2)
    rows = pd.DataFrame({"a": [1, 2, 3]})
    tables = dict(records=rows, thresholds=rows, decisions=rows, comparison=rows)
    report.write_tables(tmp_path, "quick", **tables)
    before = {p.name: p.read_text() for p in (tmp_path / "quick").iterdir()}
    fewer = dict(tables, decisions=rows.head(1))
    with pytest.raises(InputError, match=r"double_win.csv holds 3 rows and would be replaced by 1: pass -p overwrite"):
        report.write_tables(tmp_path, "quick", **fewer)
    assert {p.name: p.read_text() for p in (tmp_path / "quick").iterdir()} == before  # nothing written
    report.write_tables(tmp_path, "quick", **fewer, overwrite=True)
    assert len(pd.read_csv(tmp_path / "quick" / "double_win.csv")) == 1
    assert results.load(tmp_path).empty
