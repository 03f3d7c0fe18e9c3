"""Records, the double-win decision and the paper comparison, on hand-made records."""

import errno
import math
import os

import pandas as pd
import pytest

from dwlt_utils import report, results
from dwlt_utils.errors import InputError

DENSE = {"sa_std": 95.0, "sa_adv": 85.0, "ra_adv": 50.0}
LADDER = {k: round(1 - 0.8**k, 4) for k in range(1, 16)}


def record(**over):
    base = dict(
        notebook="04_adv_transfer",
        profile="paper",
        pretraining="adv",
        dataset="cifar10",
        stands_for="cifar10",
        regime="adv",
        data_fraction=1.0,
        subset="first",
        ticket="imp",
        level=10,
        sparsity=LADDER[10],
        metric="SA",
        checkpoint="best_ra",
        seed=1,
        value=90.0,
        sparsity_denominator="all 53 backbone Conv2d weights",
        device="cpu",
        precision="fp32",
        git_rev="abc1234",
        run_id="run-a",
        config_hash="0123abcd",
        wall_s=1.5,
    )
    if over.get("metric") == "RA":
        base["attack"] = "pgd20-linf-8/255-step2/255"
    return results.make_record(**{**base, **over})


def cell(level, sa_std, sa_adv, ra_adv, *, adv_checkpoint="best_ra", **over):
    """The three records the decision reads for one ticket level (level 0: the dense model)."""
    where = dict(ticket="dense", sparsity=0.0) if level == 0 else dict(sparsity=LADDER[level])
    where = {**where, "level": level, **over}
    wanted = [
        ("std", "SA", "best_sa", sa_std),
        ("adv", "SA", adv_checkpoint, sa_adv),
        ("adv", "RA", adv_checkpoint, ra_adv),
    ]
    return [
        record(regime=regime, metric=metric, checkpoint=checkpoint, value=value, **where)
        for regime, metric, checkpoint, value in wanted
        if value is not None
    ]


def dense(**over):
    return cell(0, DENSE["sa_std"], DENSE["sa_adv"], DENSE["ra_adv"], **over)


def frame(*cells):
    return results.to_frame([r for c in cells for r in c])


def status(df, level, **kw):
    table = results.double_win_table(df, **kw)
    return table.set_index("level").status[level]


# --- the decision


def test_tie_with_dense_is_a_win():
    df = frame(dense(), cell(10, DENSE["sa_std"], DENSE["sa_adv"], DENSE["ra_adv"]))
    assert status(df, 10) == "double-win"


def test_float_noise_below_dense_is_still_a_tie():
    df = frame(dense(), cell(10, DENSE["sa_std"], DENSE["sa_adv"], DENSE["ra_adv"] - 1e-12))
    assert status(df, 10) == "double-win"


def test_tolerance_decides_a_small_shortfall():
    df = frame(dense(), cell(10, DENSE["sa_std"], DENSE["sa_adv"] - 0.01, DENSE["ra_adv"]))
    assert status(df, 10) == "not"
    assert status(df, 10, tol=0.05) == "double-win"
    row = results.double_win_table(df).iloc[0]
    assert (row.sa_std_ok, row.sa_adv_ok, row.ra_adv_ok) == (True, False, True)


def test_missing_value_at_a_level_is_missing_not_a_loss():
    # Level 11 lacks RA; its SA values are below dense, but the status must still be "missing".
    df = frame(dense(), cell(10, 96, 86, 51), cell(11, 10, 10, None))
    table = results.double_win_table(df).set_index("level")
    assert table.status[10] == "double-win"
    assert table.status[11] == "missing"
    assert pd.isna(table.ra_adv[11]) and pd.isna(table.ra_adv_ok[11]) and pd.isna(table.ra_adv_n[11])


def test_missing_dense_makes_every_level_missing():
    df = frame(cell(0, 95, 85, None), cell(10, 96, 86, 51), cell(11, 96, 86, 51))
    assert set(results.double_win_table(df).status) == {"missing"}
    top = results.highest_double_win(df).iloc[0]
    assert math.isnan(top.highest_sparsity) and pd.isna(top.highest_level)
    assert top.n_missing == 2 and top.missing_above
    no_dense_at_all = frame(cell(10, 96, 86, 51))
    assert list(results.double_win_table(no_dense_at_all).status) == ["missing"]


def test_non_monotone_ladder_reports_largest_win_and_first_failure():
    wins_below = (cell(k, 96, 86, 51) for k in range(1, 10))
    df = frame(dense(), *wins_below, cell(10, 96, 86, 40), cell(11, 96, 86, 51), cell(12, 90, 80, 40))
    top = results.highest_double_win(df).iloc[0]
    assert top.highest_sparsity == LADDER[11] == 0.9141
    assert top.highest_level == 11
    assert top.first_failure_sparsity == LADDER[10] == 0.8926
    assert top.first_failure_level == 10
    assert (top.n_levels, top.n_missing, top.missing_above, top.failure_below) == (12, 0, False, True)
    assert not results.highest_double_win(frame(dense(), cell(1, 96, 86, 51), cell(2, 90, 80, 40))).failure_below[0]


def test_missing_level_above_the_threshold_is_flagged():
    df = frame(dense(), cell(10, 96, 86, 51), cell(11, 96, 86, None))
    top = results.highest_double_win(df).iloc[0]
    assert top.highest_level == 10 and top.missing_above and top.n_missing == 1


def test_checkpoint_choice_changes_the_outcome():
    # The best-RA checkpoint keeps RA but loses SA; the best-SA checkpoint keeps both.
    df = frame(
        dense(),
        dense(adv_checkpoint="best_sa")[1:],
        cell(10, 96, 84, 51),
        cell(10, 96, 86, 50, adv_checkpoint="best_sa")[1:],
    )
    assert status(df, 10) == "not"
    assert status(df, 10, adv_checkpoint="best_sa") == "double-win"


def test_seeds_are_averaged_per_cell():
    # Seed 1 alone fails SA_adv (84 < 85); the mean over seeds (84 + 87) / 2 = 85.5 wins.
    df = frame(dense(), cell(10, 96, 84, 51, seed=1), cell(10, 96, 87, 51, seed=2))
    row = results.double_win_table(df).iloc[0]
    assert row.sa_adv == 85.5 and row.sa_adv_n == 2 and row.sa_std_n == 2 and row.sa_adv_dense_n == 1
    assert row.status == "double-win"


def test_same_cell_and_seed_from_two_runs_is_refused():
    df = frame(dense(), cell(10, 96, 86, 51, run_id="run-a"), cell(10, 96, 86, 51, run_id="run-b"))
    with pytest.raises(InputError, match="same cell"):
        results.double_win_table(df)


def test_quick_and_paper_rows_are_separate_groups():
    quick = dict(profile="quick", dataset="digits", stands_for="cifar10")
    # Quick dense values are far lower: mixing them with paper rows would make the paper ticket win.
    df = frame(dense(), cell(10, 90, 80, 40), cell(0, 60, 50, 20, **quick), cell(10, 61, 51, 21, **quick))
    table = results.double_win_table(df).set_index("profile")
    assert table.status["paper"] == "not"
    assert table.status["quick"] == "double-win"
    assert table.sa_std_dense["quick"] == 60


def test_incomparable_records_in_one_group_are_refused():
    other_attack = cell(10, None, None, 51, attack="autoattack-linf-8/255")
    with pytest.raises(InputError, match="mix several attack values"):
        results.double_win_table(frame(dense(), cell(10, 96, 86, None), other_attack))
    other_sparsity = frame(dense(), cell(10, 96, None, None), cell(10, None, 86, 51))
    ticket_adv = (other_sparsity.ticket == "imp") & (other_sparsity.regime == "adv")
    other_sparsity.loc[ticket_adv, "sparsity"] = 0.9  # a frame changed after its records were checked
    with pytest.raises(InputError, match="mix several sparsity values"):
        results.double_win_table(other_sparsity)


def test_bad_decision_parameters():
    df = frame(dense())
    for kw in (dict(tol=-1), dict(adv_checkpoint="last"), dict(ticket="dense")):
        with pytest.raises(InputError):
            results.double_win_table(df, **kw)


# --- the paper comparison


def test_paper_reference_holds_the_six_abstract_numbers():
    ref = results.paper_reference()
    got = {(r.pretraining, r.dataset): (r.level, r.sparsity) for r in ref.itertuples()}
    assert got == {
        ("standard", "cifar10"): (10, 0.8926),
        ("standard", "cifar100"): (6, 0.7379),
        ("fast_adv", "cifar10"): (10, 0.8926),
        ("fast_adv", "cifar100"): (7, 0.7903),
        ("adv", "cifar10"): (11, 0.9141),
        ("adv", "cifar100"): (8, 0.8322),
    }
    assert all(LADDER[level] == sparsity for level, sparsity in got.values())
    assert set(ref.source) == {"arXiv:2206.04762 (abstract)"}


def test_compare_never_matches_quick_rows_to_a_paper_cell():
    quick = dict(profile="quick", dataset="digits", stands_for="cifar10")
    df = frame(
        dense(),
        cell(10, 96, 86, 51),
        cell(11, 96, 86, None),
        cell(0, 60, 50, 20, **quick),
        cell(11, 61, 51, 21, **quick),
    )
    out = results.compare_with_paper(results.highest_double_win(df), results.paper_reference())
    assert len(out) == 7  # six paper cells, one of them reproduced, plus the quick row
    paper = out[(out.profile == "paper") & (out.pretraining == "adv") & (out.stands_for == "cifar10")].iloc[0]
    assert (paper.paper_level, paper.reproduced_level, paper.level_difference) == (11, 10, -1)
    assert paper.missing_above and "may be higher" in paper.note
    quick_row = out[out.profile == "quick"].iloc[0]
    assert quick_row.reproduced_level == 11
    assert pd.isna(quick_row.paper_level) and pd.isna(quick_row.level_difference)
    assert "stands in for cifar10" in quick_row.note
    assert (out.note == "not reproduced yet").sum() == 5
    assert list(out.profile) == ["paper"] * 6 + ["quick"]


def shortened(level, sa_std, sa_adv, ra_adv, ladder=""):
    """A cell whose transfers ran 10 epochs: each regime's records say so against its own protocol."""
    said = {"std": "10 epochs instead of 150", "adv": "10 epochs instead of 100"}
    return [
        results.make_record(**{**r, "deviations": "; ".join(filter(None, [said[r["regime"]], ladder]))})
        for r in cell(level, sa_std, sa_adv, ra_adv)
    ]


SHORT = "std transfer: 10 epochs instead of 150; adv transfer: 10 epochs instead of 100"


def test_deviating_runs_are_their_own_group_and_never_matched_to_the_paper():
    # The shortened ticket would lose against the protocol's dense model, and wins against its own.
    df = frame(dense(), shortened(0, 80, 70, 30), shortened(11, 81, 71, 31))
    highest = results.highest_double_win(df)
    assert list(highest.deviations) == [SHORT] and highest.highest_level.iloc[0] == 11
    out = results.compare_with_paper(highest, results.paper_reference())
    deviating = out[out.deviations == SHORT].iloc[0]
    assert pd.isna(deviating.paper_level) and deviating.note == f"deviates from the protocol: {SHORT}"
    assert (out.note == "not reproduced yet").sum() == 6


def test_a_shortened_ladder_is_compared_with_the_dense_model_of_its_transfer_recipe():
    ladder = "IMP 1 epoch per level instead of 30"
    df = frame(
        dense(),
        shortened(0, 80, 70, 30),
        shortened(10, 81, 71, 31, ladder),
        shortened(11, 79, 71, 31, ladder),  # loses SA after standard transfer
        cell(11, 96, 86, 51),  # a protocol ticket at the same level, against the protocol's dense model
        cell(12, 96, 86, 51),  # another protocol ticket level, never mixed with the shortened ladder
    )
    table = results.double_win_table(df)
    assert set(table.deviations) == {"", f"{SHORT}; {ladder}"}
    short = table[table.deviations != ""].set_index("level")
    assert list(short.status) == ["double-win", "not"] and list(short.sa_std_dense) == [80, 80]
    assert list(table[table.deviations == ""].status) == ["double-win", "double-win"]
    highest = results.highest_double_win(df).set_index("deviations")
    assert highest.highest_level[f"{SHORT}; {ladder}"] == 10 and highest.highest_level[""] == 12


def test_a_level_transferred_with_another_recipe_is_not_a_level_of_the_protocol():
    short_adv = [
        results.make_record(**{**r, "deviations": "10 epochs instead of 100"} if r["regime"] == "adv" else r)
        for r in cell(11, 96, 86, 51)
    ]
    table = results.double_win_table(frame(dense(), cell(10, 96, 86, 51), short_adv))
    short = "adv transfer: 10 epochs instead of 100"
    assert list(zip(table.deviations, table.level, table.status)) == [
        ("", 10, "double-win"),
        ("", 11, "missing"),  # under the protocol, level 11 lacks its adversarial transfer
        (short, 10, "missing"),  # every level of the ladder shows under each recipe its tickets ran
        (short, 11, "missing"),  # no dense model ran that recipe
    ]
    assert bool(results.highest_double_win(frame(dense(), cell(10, 96, 86, 51), short_adv)).missing_above.iloc[0])


# --- records on disk


def test_write_twice_keeps_one_set_of_rows(tmp_path):
    rows = dense()
    results.write_records(tmp_path / "run", rows)
    results.write_records(tmp_path / "run", rows)
    assert len(results.load(tmp_path)) == len(rows)


def test_write_refuses_the_same_measurement_twice(tmp_path):
    with pytest.raises(InputError, match="more than once"):
        results.write_records(tmp_path, dense() + dense())


def test_load_two_runs_in_order_with_dtypes(tmp_path):
    results.write_records(tmp_path / "b" / "ticket", cell(10, 96, 86, 51, run_id="run-b", git_rev="0123456"))
    results.write_records(tmp_path / "a", dense())
    df = results.load(tmp_path)
    assert list(df.columns) == list(results.RECORD_COLUMNS)
    assert list(df.run_id) == ["run-a"] * 3 + ["run-b"] * 3
    assert df.level.dtype == "int64" and df.seed.dtype == "int64"
    assert df.value.dtype == "float64" and df.sparsity.dtype == "float64"
    assert df.git_rev.dtype == "str" and df.git_rev.iloc[-1] == "0123456"  # digits stay text
    assert list(df.attack) == ["", "", "pgd20-linf-8/255-step2/255"] * 2
    assert df.sparsity.iloc[-1] == LADDER[10]
    assert results.highest_double_win(df).highest_level.iloc[0] == 10


@pytest.mark.parametrize("make_root", [lambda p: p, lambda p: p / "absent"])
def test_load_of_empty_or_missing_root_gives_an_empty_schema_frame(tmp_path, make_root):
    df = results.load(make_root(tmp_path))
    assert df.empty and list(df.columns) == list(results.RECORD_COLUMNS)
    assert df.level.dtype == "int64" and df.value.dtype == "float64"
    assert results.double_win_table(df).empty and results.highest_double_win(df).empty


def test_load_names_a_file_with_wrong_columns(tmp_path):
    results.write_records(tmp_path / "good", dense())
    bad = tmp_path / "bad" / "records.csv"
    bad.parent.mkdir()
    bad.write_text("metric,value\nSA,90\n")
    with pytest.raises(InputError, match="bad/records.csv"):
        results.load(tmp_path)


def test_load_names_the_line_of_a_bad_value(tmp_path):
    path = results.write_records(tmp_path, dense())
    path.write_text(path.read_text().replace(",SA,", ",sa,", 1))
    with pytest.raises(InputError, match=r"records.csv, line 2: metric"):
        results.load(tmp_path)
    path.write_text(path.read_text().replace(",0,0.0,", ",zero,0.0,", 1))
    with pytest.raises(InputError, match=r"records.csv holds a value of the wrong type"):
        results.load(tmp_path)


def deny_listing(monkeypatch, folder):
    """`folder` cannot be listed, as under a colleague's umask (root passes file modes, so the kernel's answer
    is given here)."""
    scandir = os.scandir

    def refusing(path="."):
        if os.fspath(path) == os.fspath(folder):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)


def test_load_names_every_run_directory_it_cannot_read_and_leaves_them_out_only_when_asked(tmp_path, monkeypatch):
    results.write_records(tmp_path / "good", dense())
    results.write_records(tmp_path / "locked" / "seed_1", cell(10, 96, 86, 51, run_id="run-b"))
    deny_listing(monkeypatch, tmp_path / "locked")
    with pytest.raises(InputError) as refused:
        results.load(tmp_path)
    locked = f"{tmp_path}/locked (cannot be listed: permission denied)"
    assert str(refused.value) == f"Cannot read one run directory under {tmp_path}: {locked}."
    # a records file that cannot be opened (a link to a run directory since removed), and damaged records
    (tmp_path / "moved").mkdir()
    (tmp_path / "moved" / "records.csv").symlink_to(tmp_path / "gone" / "records.csv")
    damaged = results.write_records(tmp_path / "damaged", dense(run_id="run-c"))
    damaged.write_text(damaged.read_text().replace(",SA,", ",sa,", 1))
    with pytest.raises(results.UnreadableRecordsError) as refused:
        results.load(tmp_path)
    assert refused.value.problems == [
        locked,
        f"{damaged}, line 2: metric must be one of ['SA', 'RA'], got 'sa'",
        f"{tmp_path}/moved/records.csv (cannot be opened: no such file or directory)",
    ]
    said = []
    kept = results.load(tmp_path, skip_unreadable=True, say=said.append)
    assert list(kept.run_id) == ["run-a"] * 3
    assert said == [f"Cannot read 3 run directories under {tmp_path}: {'; '.join(refused.value.problems)}; left out."]
    # notebook 06 stops on them unless told to go on without them
    with pytest.raises(InputError, match=r"\(cannot be listed: permission denied\); .*; pass -p skip_unreadable True"):
        report.profile_records(tmp_path, "paper")
    assert len(report.profile_records(tmp_path, "paper", skip_unreadable=True)) == 3
    with pytest.raises(InputError, match="skip_unreadable is True or False; got 'yes'"):
        report.check_options(tol=0, adv_checkpoint="best_ra", skip_unreadable="yes")


def written_then_edited(tmp_path, rows, old, new):
    """A run's records file with one of its rows changed by hand afterwards."""
    path = results.write_records(tmp_path / "run", rows)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "rows, old, new, message",
    [
        # line 5 is the ticket's std SA: its level is 10, its sparsity level 11's
        (
            dense() + cell(10, 96, 86, 51),
            ",10,0.8926,SA",
            ",10,0.9141,SA",
            r"line 5: sparsity 0.9141 is not that of level 10, 0.8926",
        ),
        (
            dense() + cell(10, 96, 86, 51),
            ",10,0.8926,SA",
            ",3,0.8926,SA",
            r"line 5: sparsity 0.8926 is not that of level 3, 0.488",
        ),
        (
            dense() + cell(10, 96, 86, 51),
            ",10,0.8926,SA",
            ",0,0.0,SA",
            r"line 5: a record of ticket 'imp' has level >= 1",
        ),
        (
            dense() + cell(10, 96, 86, 51),
            ",10,0.8926,SA",
            ",45,0.8926,SA",
            r"line 5: An IMP level is an integer in \[0, 40\]",
        ),
        (
            dense(),
            ",adv,1.0,first,dense,0,0.0,RA",
            ",std,1.0,first,dense,0,0.0,RA",
            r"line 4: an RA record is of adversarial transfer, got regime 'std'",
        ),
        (
            dense(),
            ",adv,1.0,first,dense,0,0.0,SA,best_ra",
            ",std,1.0,first,dense,0,0.0,SA,best_sa",
            r"lines 2, 3: one measurement recorded twice \(dense level 0 std SA best_sa seed 1\)",
        ),
    ],
)
def test_load_refuses_records_that_contradict_themselves_naming_the_file_and_row(tmp_path, rows, old, new, message):
    path = written_then_edited(tmp_path, rows, old, new)
    with pytest.raises(InputError, match=rf"{path}, {message}"):
        results.load(tmp_path)


# --- validation


@pytest.mark.parametrize(
    "over, message",
    [
        (dict(colour="red"), "unknown record column"),
        (dict(metric="sa"), "metric must be one of"),
        (dict(regime="robust"), "regime must be one of"),
        (dict(profile="full"), "profile must be one of"),
        (dict(ticket="lottery"), "ticket must be one of"),
        (dict(value=100.5), "value is a percentage"),
        (dict(value=-0.1), "value is a percentage"),
        (dict(value=float("nan")), "finite"),
        (dict(sparsity=89.26), "sparsity is a fraction"),
        (dict(sparsity=0.9), "sparsity 0.9 is not that of level 10, 0.8926"),
        (dict(level=0, sparsity=0.0), "a record of ticket 'imp' has level >= 1"),
        (dict(metric="RA", regime="std", checkpoint="best_sa"), "an RA record is of adversarial transfer"),
        (dict(data_fraction=0.0), "data_fraction"),
        (dict(level=1.0), "level must be of type int"),
        (dict(seed=True), "seed must be of type int"),
        (dict(ticket="dense"), "dense record"),
        (dict(stands_for="cifar100"), "stands_for must equal dataset"),
        (dict(metric="RA", attack=""), "must name its attack"),
        (dict(regime="std", checkpoint="best_ra"), "best_sa"),
        (dict(timestamp="2024-05-01T12:00:00+02:00"), "UTC"),
        (dict(device=""), "device must not be empty"),
    ],
)
def test_make_record_rejects(over, message):
    with pytest.raises(InputError, match=message):
        record(**over)


def test_make_record_requires_every_column():
    fields = record()
    del fields["seed"]
    with pytest.raises(InputError, match=r"lacks required column\(s\) \['seed'\]"):
        results.make_record(**fields)


def test_make_record_fills_versions_and_utc_timestamp():
    rec = record()
    assert tuple(rec) == results.RECORD_COLUMNS
    assert rec["dwlt_version"] and rec["torch_version"] and rec["attack"] == ""
    assert rec["timestamp"].endswith("+00:00")
    assert results.make_record(**{**rec, "profile": "quick", "dataset": "digits"})["stands_for"] == "cifar10"


# --- summaries over seeds


def summary_of(*cells):
    return results.summarize(frame(*cells)).set_index(["ticket", "regime", "metric"])


def test_a_summary_is_mean_sd_and_students_interval_over_seeds():
    table = summary_of(*(cell(10, 96, sa, 51, seed=seed) for seed, sa in ((1, 70.0), (2, 72.0), (3, 74.0))))
    row = table.loc[("imp", "adv", "SA")]
    # mean 72, sd 2 (n − 1 = 2), t(0.975, 2) = 4.302653: half-width 4.302653 · 2 / √3 = 4.968275
    assert (row["mean"], row.sd, row.n, row.seeds) == (72.0, 2.0, 3, "1,2,3")
    assert row.ci95_low == pytest.approx(72 - 4.968275, abs=1e-5)
    assert row.ci95_high == pytest.approx(72 + 4.968275, abs=1e-5)
    tied = table.loc[("imp", "std", "SA")]  # three equal values: no spread, the interval a point
    assert (tied["mean"], tied.sd, tied.ci95_low, tied.ci95_high) == (96.0, 0.0, 96.0, 96.0)


def test_one_seed_has_no_spread_and_a_missing_seed_shortens_the_count():
    table = summary_of(dense(seed=1), cell(10, 96, 86, 51, seed=1), cell(10, 96, 88, None, seed=3))
    one = table.loc[("dense", "adv", "SA")]
    assert one.n == 1 and one["mean"] == 85.0 and math.isnan(one.sd) and math.isnan(one.ci95_low)
    sa, ra = table.loc[("imp", "adv", "SA")], table.loc[("imp", "adv", "RA")]
    assert (sa.n, sa["mean"], sa.seeds) == (2, 87.0, "1,3")
    assert (ra.n, ra.seeds) == (1, "1")  # seed 3 has no RA record


def test_a_summary_never_averages_precisions_or_a_cell_measured_twice():
    bf16 = dict(device="cuda, bf16 autocast", precision="bf16")
    table = results.summarize(frame(cell(10, 96, 86, 51, **bf16), cell(10, 95, 85, 50)))
    assert len(table[(table.regime == "adv") & (table.metric == "SA")]) == 2  # one row per precision
    twice = frame(cell(10, 96, 86, 51, run_id="run-a"), cell(10, 96, 87, 51, run_id="run-b"))
    with pytest.raises(InputError, match="same cell with the same seed .* before summarizing"):
        results.summarize(twice)
    assert results.summarize(frame()).empty


def test_records_of_two_precisions_are_decided_apart():
    bf16 = dict(device="cuda, bf16 autocast, channels_last", precision="bf16")
    # In fp32 the ticket wins; in bf16 its dense model is higher and it fails: mixed, the mean would decide.
    df = frame(dense(), cell(10, 96, 86, 51), cell(0, 97, 87, 52, **bf16), cell(10, 96, 86, 51, **bf16))
    table = results.double_win_table(df).set_index("precision")
    assert table.status.to_dict() == {"bf16": "not", "fp32": "double-win"}


def test_records_written_before_precision_had_a_column_name_it_in_their_device(tmp_path):
    old = frame(cell(10, 96, 86, 51, device="cuda, bf16 autocast", precision="bf16"), dense())
    (tmp_path / "run").mkdir()
    old.drop(columns="precision").to_csv(tmp_path / "run" / "records.csv", index=False)
    loaded = results.load(tmp_path)
    assert list(loaded.columns) == list(results.RECORD_COLUMNS)
    assert sorted(loaded.precision.unique()) == ["bf16", "fp32"]
    assert loaded.precision.tolist() == old.precision.tolist()


def test_records_written_before_the_corruption_columns_were_measured_on_the_clean_test_split(tmp_path):
    old = frame(cell(10, 96, 86, 51), dense())
    (tmp_path / "run").mkdir()
    old.drop(columns=["corruption", "severity"]).to_csv(tmp_path / "run" / "records.csv", index=False)
    loaded = results.load(tmp_path)
    assert list(loaded.columns) == list(results.RECORD_COLUMNS)
    assert set(loaded.corruption) == {""} and set(loaded.severity) == {0}


@pytest.mark.parametrize(("corruption", "severity"), [("fog", 0), ("", 2), ("fog", 6)])
def test_a_corrupted_test_set_has_a_severity_and_the_clean_one_none(corruption, severity):
    with pytest.raises(InputError, match="a corrupted test set has a severity 1-5 and the clean one 0"):
        results.make_record(**{**cell(10, 96, 86, 51)[0], "corruption": corruption, "severity": severity})


def three_dense_seeds(sa_adv=(84.0, 85.0, 86.0)):
    """The dense model over seeds 1-3: SA_adv mean 85 with sample sd 1, the other values fixed."""
    return [r for seed, v in zip((1, 2, 3), sa_adv) for r in cell(0, DENSE["sa_std"], v, DENSE["ra_adv"], seed=seed)]


@pytest.mark.parametrize(
    ("ticket_sa_adv", "tol", "rule", "status"),
    [
        (84.2, 0.0, "tol", "not"),  # 84.2 < 85
        (84.2, 0.0, "sd", "double-win"),  # 84.2 >= 85 − sd 1
        (83.9, 0.0, "sd", "not"),  # 83.9 < 84
        (83.9, 1.5, "sd", "double-win"),  # the larger of sd and tol: 83.9 >= 85 − 1.5
        (85.0, 0.0, "tol", "double-win"),  # a tie
    ],
)
def test_the_sd_rule_lets_a_ticket_fall_one_dense_standard_deviation_short(ticket_sa_adv, tol, rule, status):
    df = frame(three_dense_seeds(), cell(10, 96, ticket_sa_adv, 51))
    row = results.double_win_table(df, tol=tol, rule=rule).iloc[0]
    assert (row.status, row.rule, row.sa_adv_dense_sd, row.sa_adv_dense_n) == (status, rule, 1.0, 3)


def test_the_sd_rule_leaves_a_dense_model_of_one_seed_undecided():
    table = results.double_win_table(frame(dense(), cell(10, 99, 99, 99)), rule="sd")
    assert table.status.tolist() == ["missing"] and table.sa_adv_ok.isna().all()
    with pytest.raises(InputError, match="rule must be one of"):
        results.double_win_table(frame(dense()), rule="t-test")


def test_the_sensitivity_table_shows_the_threshold_move_with_rule_tol_and_seeds():
    from dwlt_utils import report

    levels = [cell(level, 96, sa, 51, seed=s) for level, sa in ((10, 84.2), (11, 83.9)) for s in (1, 2, 3)]
    table = report.sensitivity(frame(three_dense_seeds(), *levels), adv_checkpoint="best_ra").set_index("seeds")
    # All three seeds: dense SA_adv 85 ± 1. Seed 1 alone: dense 84, and sd is undefined.
    assert table.loc["all seeds (3)", ["tol 0", "tol 0.5", "tol 1", "sd"]].tolist() == ["none", "none", "10", "10"]
    assert table.loc["seed 1 only", ["tol 0", "tol 0.5", "tol 1", "sd"]].tolist() == ["10", "11", "11", "undecided"]


def test_the_sensitivity_table_has_a_row_per_recorded_group_and_seed_subset_only():
    from dwlt_utils import report

    limited = dict(data_fraction=0.1, deviations="standard transfer on the data budget")
    df = frame(dense(), cell(10, 96, 86, 51), dense(**limited), cell(10, 96, 86, 51, **limited))
    table = report.sensitivity(df, adv_checkpoint="best_ra")
    # two groups × (all seeds, first seed); a pivot over every combination of keys would add two invented rows
    assert len(table) == 4 and sorted(table.data_fraction) == [0.1, 0.1, 1.0, 1.0]
    assert set(table[table.data_fraction == 0.1].deviations) == {
        "std transfer: {0}; adv transfer: {0}".format(limited["deviations"])
    }
    assert (table["tol 0"] == "10").all()


def test_std_data_all_reads_a_data_limited_group_s_standard_transfer_from_the_full_data_cells():
    budget = dict(data_fraction=0.1)
    df = frame(
        cell(0, 95, None, None),  # the full data: standard transfer only (notebook 03)
        cell(10, 96, None, None),
        cell(0, 80, 70, 40, **budget),  # the budget: std on it (this project) and adv
        cell(10, 79, 70, 40, **budget),
    )

    def limited(table):
        return table[table.data_fraction == 0.1].iloc[0]

    on_budget = limited(results.double_win_table(df))
    assert (on_budget.sa_std, on_budget.sa_std_dense, on_budget.status) == (79, 80, "not")
    official = limited(results.double_win_table(df, std_data="all"))
    assert (official.sa_std, official.sa_std_dense, official.status, official.std_data) == (96, 95, "double-win", "all")
    assert results.highest_double_win(df, std_data="all").set_index("data_fraction").highest_level[0.1] == 10
    with pytest.raises(InputError, match="std_data must be one of"):
        results.double_win_table(df, std_data="full")
