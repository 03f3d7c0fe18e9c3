"""What notebook 06 shows: the records of one profile, the double-win decisions, the paper's numbers beside
the reproduced ones, what each figure leaves out, and the tidy tables it writes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from . import io, paths, results
from .autoattack import GAP_FLAG
from .commands import RowCommands, with_commands
from .errors import InputError, MissingInputError, check_choice, check_number
from .notebook import declared_parameters, notebook_path
from .plotting import missing_cells
from .profiles import Profile
from .vocabulary import CHECKPOINTS, STD_DATA


def check_options(
    *, tol: float, adv_checkpoint: str, rule: str = "tol", std_data: str = "budget", skip_unreadable: bool = False
) -> None:
    check_number("tol (percentage points)", tol, 0, 100)
    check_choice("adv_checkpoint", adv_checkpoint, CHECKPOINTS)
    check_choice("rule", rule, results.RULES)
    check_choice("std_data", std_data, STD_DATA)
    if not isinstance(skip_unreadable, bool):
        raise InputError(f"skip_unreadable is True or False; got {skip_unreadable!r}.")


def profile_records(
    run_root: Path, profile: str, *, seed: int = 0, pattern: str = paths.RECORDS, skip_unreadable: bool = False
) -> pd.DataFrame:
    """Every record of one profile under `run_root` (of one seed when seed > 0), from the files `pattern`
    names: the cells' own records, or those of their AutoAttack checks or corrupted test sets (`paths`). Run
    directories that cannot be read stop it, named, unless `skip_unreadable`: then they are named and left out."""
    try:
        records = results.load(run_root, pattern, skip_unreadable=skip_unreadable)
    except results.UnreadableRecordsError as err:
        # Tables decided without some runs would look complete: going on without them is asked for, not assumed.
        remedy = "pass -p skip_unreadable True to go on without them"
        raise results.UnreadableRecordsError(err.root, err.problems, remedy) from None
    records = records[records.profile == profile]
    return records[records.seed == seed] if seed else records


def require_records(records: pd.DataFrame, run_root: Path, profile: str, *, seed: int = 0) -> None:
    """Stop with one sentence when there is nothing to show: a mistyped run root is not an empty table."""
    if records.empty:
        which = f" of seed {seed}" if seed else ""
        raise MissingInputError(
            f"No records of the {profile} profile{which} under {run_root}: check run_root, or run a transfer "
            "notebook (03-05) first."
        )


def decide(
    records: pd.DataFrame, run_root: Path, parameters: Mapping, **decision
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The double-win decisions (`results.double_win_table`), the thresholds (`results.highest_double_win`)
    and the thresholds beside the paper's, with 06's decision options (tol, adv_checkpoint, rule, std_data).
    Each row carries the commands that make it again (`commands`): given notebook 06's own run_root and
    data_root, so that they run where 06 read the records."""
    decisions = results.double_win_table(records, **decision)
    thresholds = results.highest_double_win(records, **decision)
    comparison = results.compare_with_paper(thresholds, results.paper_reference())
    defaults = declared_parameters(notebook_path("06_figures"))
    folders = {k: parameters[k] for k in ("run_root", "data_root") if parameters[k] != defaults[k]}
    rows = RowCommands(run_root, folders)
    seeds = sorted(int(s) for s in records.seed.unique())
    return tuple(with_commands(table, rows, seeds=seeds) for table in (decisions, thresholds, comparison))


SENSITIVITY_TOLS = (0.0, 0.5, 1.0)


def sensitivity(records: pd.DataFrame, *, adv_checkpoint: str, std_data: str = "budget") -> pd.DataFrame:
    """The highest double-win level of every group as the decision changes: a column per rule (`tol` at 0,
    0.5 and 1 point, and `sd`), a row per group on the mean of all its seeds and on its first seed alone.
    "none": no level is double-win; "undecided": the rule could decide no level (`sd` with one seed)."""
    decisions = [(f"tol {t:g}", "tol", t) for t in SENSITIVITY_TOLS] + [("sd", "sd", 0.0)]
    first = int(records.seed.min())
    subsets = [
        (f"all seeds ({records.seed.nunique()})", records),
        (f"seed {first} only", records[records.seed == first]),
    ]
    keys = ["profile", "pretraining", "stands_for", "data_fraction", "precision", "deviations"]
    rows = []
    for seeds, subset in subsets:
        for label, rule, tol in decisions:
            highest = results.highest_double_win(
                subset, tol=tol, adv_checkpoint=adv_checkpoint, rule=rule, std_data=std_data
            )
            said = [
                "undecided"
                if row.n_missing == row.n_levels
                else "none"
                if pd.isna(row.highest_level)
                else str(row.highest_level)
                for row in highest.itertuples()
            ]
            rows.append(highest[keys].assign(seeds=seeds, decision=label, highest_level=said))
    table = pd.concat(rows, ignore_index=True)
    # Only the groups that exist: a pivot over every combination of the keys would invent some.
    wide = table.set_index([*keys, "seeds", "decision"]).highest_level.unstack("decision")
    return wide[[label for label, _, _ in decisions]].reset_index().rename_axis(columns=None)


def autoattack_note(robustness: pd.DataFrame) -> str:
    """A sentence on the AutoAttack checks: none, or how many tickets PGD-20 over-states and which."""
    if robustness.empty:
        return "No AutoAttack checks recorded: run notebook 04 or 05 with -p eval_attack autoattack."
    flagged = robustness[robustness.flag]
    said = "; ".join(
        f"{row.pretraining} {row.ticket}"
        + ("" if row.ticket == "dense" else f" at {row.sparsity:.2%}")
        + f" (data fraction {row.data_fraction:g}): {row.gap:.1f} points"
        for row in flagged.itertuples()
    )
    return (
        f"{len(robustness)} checked, {len(flagged)} with PGD-20 RA more than {GAP_FLAG:g} points above AutoAttack's"
        + (f": {said}." if said else ".")
    )


def paper_table(table: pd.DataFrame) -> pd.DataFrame:
    """`paper_comparison` as notebook 06 shows it: percentages, and the columns a reader needs."""
    shown = pd.DataFrame(
        {
            "profile": table.profile,
            "pre-training": table.pretraining,
            "paper data set": table.stands_for,
            "data set used": table.dataset.fillna(""),
            "data fraction": table.data_fraction,
            "precision": table.precision.fillna(""),
            "paper: highest double-win (%)": (100 * table.paper_sparsity).round(2),
            "reproduced (%)": (100 * table.reproduced_sparsity).round(2),
            "paper level": table.paper_level,
            "reproduced level": table.reproduced_level,
            "levels apart": table.level_difference,
            "note": table.note,
            "commands": table.commands,
        }
    )
    return shown


def non_monotone(highest: pd.DataFrame) -> list[str]:
    """A sentence per group whose ladder fails below its highest double-win level (none: an empty list)."""
    return [
        f"{row.pretraining} on {row.stands_for} ({row.profile} profile, data fraction {row.data_fraction:g}"
        f"{', ' + row.deviations if row.deviations else ''}): level {row.first_failure_level} is not double-win "
        f"but level {row.highest_level} above it is; a search that bisects the ladder assumes this never happens."
        for row in highest[highest.failure_below].itertuples()
    ]


def figure_notes(records: pd.DataFrame, profile: Profile, figure: str) -> list[str]:
    """Sentences saying what a figure has no records for (and, for the curves, which levels it has)."""
    if figure == "data-limited":
        limited = records[records.data_fraction < 1.0]
        if limited.empty:
            return ["No data-limited records: run notebooks/05_data_limited.ipynb (e.g. -p data_fraction 0.01)."]
        fractions = ", ".join(f"{f:g}" for f in sorted(set(limited.data_fraction)))
        return [f"Data fractions recorded: {fractions}."]
    notes = [
        line
        for line in missing_cells(records, profile=profile.name, datasets=profile.paper_datasets)
        if line.startswith("Standard" if figure == "std" else "Adversarial")
    ]
    coverage = profile.coverage_note()
    return notes + [coverage] if coverage else notes or ["Every pre-training and data set has records."]


def corruption_accuracy(records: pd.DataFrame, corrupted: pd.DataFrame, *, adv_checkpoint: str) -> pd.DataFrame:
    """Of every cell tested on corrupted images: its accuracy on the clean test split (severity 0) and, per
    severity, the mean over the corruptions, at the checkpoint the figures read (best_sa after standard
    transfer, `adv_checkpoint` after adversarial); means over seeds, with how many there were."""
    clean = records[records.run_id.isin(set(corrupted.run_id))]
    # A cell's deviations are its clean records' (its corrupted records add the stand-in's words).
    corrupted = corrupted.assign(deviations=corrupted.run_id.map(dict(zip(clean.run_id, clean.deviations))))
    both = pd.concat([clean, corrupted], ignore_index=True)
    both = both[both.checkpoint == both.regime.map({"std": "best_sa", "adv": adv_checkpoint})]
    keys = [*results.CELL_KEYS, "severity"]
    per_seed = both.groupby([*keys, "seed"], sort=False).value.mean()  # over the corruptions
    table = per_seed.groupby(level=keys, sort=False).agg(value="mean", seeds="size").reset_index()
    return table.sort_values(keys, ignore_index=True)


def write_tables(
    results_dir: str | Path,
    profile: str,
    *,
    records: pd.DataFrame,
    thresholds: pd.DataFrame,
    decisions: pd.DataFrame,
    comparison: pd.DataFrame,
    sensitivity: pd.DataFrame | None = None,
    autoattack: pd.DataFrame | None = None,
    corruptions: pd.DataFrame | None = None,
    figures: dict[str, Figure | None] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write the tidy tables of one profile to `<results_dir>/<profile>/` (each file replaced atomically): the
    records, the thresholds, the decisions, the thresholds beside the paper's with a note on each row, and
    how the thresholds move with the decision rule (`sensitivity`), PGD-20 beside AutoAttack (`autoattack`) and
    the accuracy on corrupted images (`corruptions`), when given, and each of `figures` as `<name>.png`.
    A table that holds more rows than its replacement is kept, and nothing is written, unless `overwrite`."""
    folder = Path(results_dir) / profile
    # Not "records.csv": that name marks a run directory's own records, which results.load collects.
    tables = {
        folder / f"{name}.csv": frame
        for name, frame in (
            ("all_records", records),
            ("highest_double_win", thresholds),
            ("double_win", decisions),
            ("paper_comparison", comparison),
            ("sensitivity", sensitivity),
            ("autoattack", autoattack),
            ("corruption_accuracy", corruptions),
        )
        if frame is not None and not (name in ("autoattack", "corruption_accuracy") and frame.empty)
    }
    if not overwrite:
        for path, frame in tables.items():
            held = _rows_in(path)
            if held > len(frame):
                raise InputError(
                    f"{path} holds {held} rows and would be replaced by {len(frame)}: pass -p overwrite_tables "
                    "True to replace the tables, or choose another results_dir."
                )
    written = [io.write_text(path, frame.to_csv(index=False, lineterminator="\n")) for path, frame in tables.items()]
    for name, figure in (figures or {}).items():
        if figure is not None:
            png = folder / f"{name}.png"
            written.append(io.atomic_write(png, lambda f, fig=figure: fig.savefig(f, format="png", dpi=100), "wb"))
    return written


def _rows_in(path: Path) -> int:
    """The data rows of a CSV table written before (0 when there is none)."""
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return max(sum(1 for line in f if line.strip()) - 1, 0)
