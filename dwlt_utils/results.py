"""Tidy result records, the double-win decision and the comparison with the paper's numbers.

A run writes one row per measured value to its records file (`paths.records_file`); `load` reads every
such file under a root into one DataFrame. The decision follows PROTOCOL.md section 1: a ticket is double-win when its
standard-transfer SA and its adversarial-transfer SA and RA all reach the dense model's (means over seeds)
by one of the `RULES`: within `tol` percentage points, or within one standard deviation of the dense model's
seeds (and at least `tol`). Sparsities are fractions in [0, 1]; accuracies are percentages.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from . import __version__, paths
from .errors import InputError, MissingInputError, phrase
from .io import write_text
from .pruning import printed_sparsity
from .vocabulary import CHECKPOINTS, METRICS, PRETRAININGS, PROFILES, REGIMES, STD_DATA, SUBSETS, TICKETS

# The record schema, in column order: what is reproduced, then how, then what it cost.
SCHEMA: dict[str, type] = {
    "notebook": str,
    "profile": str,
    "pretraining": str,
    "dataset": str,
    "stands_for": str,
    "regime": str,
    "data_fraction": float,
    "subset": str,
    "ticket": str,
    "level": int,
    "sparsity": float,
    "metric": str,
    "checkpoint": str,
    "corruption": str,  # the corrupted test set (`corruptions`); empty: the clean test split
    "severity": int,  # the corruption's severity, 1-5; 0 on the clean test split
    "seed": int,
    "value": float,
    "attack": str,
    "deviations": str,
    "sparsity_denominator": str,
    "device": str,
    "precision": str,
    "torch_version": str,
    "dwlt_version": str,
    "git_rev": str,
    "run_id": str,
    "config_hash": str,
    "timestamp": str,
    "wall_s": float,
}
RECORD_COLUMNS: tuple[str, ...] = tuple(SCHEMA)
DTYPES = {name: {str: "str", int: "int64", float: "float64"}[kind] for name, kind in SCHEMA.items()}

CHOICES: dict[str, tuple[str, ...]] = {
    name: tuple(vocabulary)
    for name, vocabulary in (
        ("profile", PROFILES),
        ("pretraining", PRETRAININGS),
        ("regime", REGIMES),
        ("subset", SUBSETS),
        ("ticket", TICKETS),
        ("metric", METRICS),
        ("checkpoint", CHECKPOINTS),
        ("precision", ("bf16", "fp32")),
    )
}
# `attack` is empty for SA rows; `deviations` is empty when the run follows its profile's protocol exactly
# (otherwise it says how it differs, e.g. "epochs 10 instead of 100"); `git_rev` is empty outside a git checkout.
MAY_BE_EMPTY = frozenset({"attack", "corruption", "deviations", "git_rev"})
# The columns a measurement fills in; the others, copied from a run's records, say what was measured.
MEASURED = ("attack", "value", "wall_s", "timestamp", "torch_version", "dwlt_version", "git_rev")
# Columns that records written before them lack, with the value they meant.
ADDED_LATER = {"corruption": "", "severity": 0}

# Two records with equal identity measure the same thing: a run may hold only one of them.
IDENTITY = (*RECORD_COLUMNS[: RECORD_COLUMNS.index("value")], "attack")

# A ticket and its dense model are compared inside one group: same profile, pre-training, data and subset.
# Runs that deviate from the protocol (fewer epochs, another attack) are compared only with runs that
# deviate the same way.
# Records of different numeric precisions are other groups too: they are never averaged or compared together.
GROUP_KEYS = (
    "profile",
    "pretraining",
    "dataset",
    "stands_for",
    "data_fraction",
    "subset",
    "precision",
    "deviations",
)
# A transfer record's deviations join its recipe's (shared with the dense model of its regime) and, for an
# IMP ticket, its ladder's, which start with this (`tickets.ImpConfig.deviations`).
LADDER_DEVIATION = "IMP "
RECIPE_COLUMN = {"std": "std_dev", "adv": "adv_dev"}  # the decision's column for each regime's recipe deviations
# The three values the decision reads: (regime, metric); std rows always use the best-SA checkpoint.
DECIDED_VALUES = {"sa_std": ("std", "SA"), "sa_adv": ("adv", "SA"), "ra_adv": ("adv", "RA")}
TIE_MARGIN = 1e-9  # percentage points: float noise must not turn a tie into a loss
# How a ticket's mean "reaches" its dense model's: "tol", at least the dense mean − tol; "sd", the lottery-ticket
# convention, at least the dense mean − its standard deviation over seeds (or − tol, when that is larger),
# which needs two seeds of the dense model (one seed leaves the condition undecided: "missing").
RULES = ("tol", "sd")


def git_revision() -> str:
    """The commit of the checkout the package runs from, "" outside one (e.g. an installed wheel)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def make_record(**fields) -> dict:
    """One validated record, columns in schema order; versions and the UTC timestamp are filled if absent."""
    defaults = {
        **ADDED_LATER,
        "attack": "",
        "deviations": "",
        "torch_version": torch.__version__,
        "dwlt_version": __version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return _check({**defaults, **fields})


def _check(fields: dict) -> dict:
    unknown = sorted(set(fields) - set(SCHEMA))
    if unknown:
        raise InputError(f"unknown record column(s) {unknown}; the columns are {list(RECORD_COLUMNS)}.")
    missing = [c for c in RECORD_COLUMNS if c not in fields]
    if missing:
        raise InputError(f"record lacks required column(s) {missing}.")
    rec = {name: _typed(name, fields[name]) for name in RECORD_COLUMNS}
    for name, allowed in CHOICES.items():
        if rec[name] not in allowed:
            raise InputError(f"{name} must be one of {list(allowed)}, got {rec[name]!r}.")
    for name in RECORD_COLUMNS:
        if SCHEMA[name] is str and name not in MAY_BE_EMPTY and not rec[name]:
            raise InputError(f"{name} must not be empty.")
    _require(0 < rec["data_fraction"] <= 1, f"data_fraction must be in (0, 1], got {rec['data_fraction']}.")
    _require(0 <= rec["sparsity"] <= 1, f"sparsity is a fraction in [0, 1], got {rec['sparsity']}.")
    _require(0 <= rec["value"] <= 100, f"value is a percentage in [0, 100], got {rec['value']}.")
    _require(rec["level"] >= 0, f"level must be >= 0, got {rec['level']}.")
    _require(rec["wall_s"] >= 0, f"wall_s must be >= 0, got {rec['wall_s']}.")
    _require(
        (rec["severity"] == 0) == (rec["corruption"] == "") and 0 <= rec["severity"] <= 5,
        f"a corrupted test set has a severity 1-5 and the clean one 0; got {rec['corruption']!r} at {rec['severity']}.",
    )
    if rec["ticket"] == "dense":
        _require(rec["level"] == 0 and rec["sparsity"] == 0, "a dense record has level 0 and sparsity 0.")
    else:
        _require(rec["level"] >= 1, f"a record of ticket {rec['ticket']!r} has level >= 1 (0 is the dense model).")
    _check_ladder_sparsity(rec["level"], rec["sparsity"])
    if rec["profile"] == "paper":
        _require(
            rec["dataset"] == rec["stands_for"],
            f"in the paper profile stands_for must equal dataset, got {rec['stands_for']!r} for {rec['dataset']!r}.",
        )
    if rec["metric"] == "RA":
        _require(rec["attack"] != "", "an RA record must name its attack.")
        # Standard transfer trains and validates without an attack (PROTOCOL.md section 4): it has no RA.
        _require(rec["regime"] == "adv", f"an RA record is of adversarial transfer, got regime {rec['regime']!r}.")
    else:
        _require(rec["attack"] == "", f"an SA record must have an empty attack, got {rec['attack']!r}.")
    # Standard transfer keeps only the best-validation-SA epoch (PROTOCOL.md section 4).
    if rec["regime"] == "std":
        _require(rec["checkpoint"] == "best_sa", "a std-regime record must use checkpoint 'best_sa'.")
    _check_timestamp(rec["timestamp"])
    return rec


def _check_ladder_sparsity(level: int, sparsity: float) -> None:
    """Every ticket sits at a level of the IMP ladder, and its sparsity is that level's as papers print it
    (`transfer.TransferConfig.sparsity`), so the two columns must agree."""
    expected = printed_sparsity(level)  # a level above the ladder's top is refused here
    _require(
        sparsity == expected,
        f"sparsity {sparsity} is not that of level {level}, {expected} (1 - 0.8^{level} as papers print it).",
    )


def _typed(name: str, value):
    kind = SCHEMA[name]
    if kind is str and isinstance(value, str):
        return value
    # bool is an int to Python, never a level, seed or accuracy here.
    if kind is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if kind is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
        raise InputError(f"{name} must be a finite number, got {value}.")
    raise InputError(f"{name} must be of type {kind.__name__}, got {value!r}.")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def _check_timestamp(text: str) -> None:
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"timestamp must be ISO 8601, got {text!r}.") from None
    _require(stamp.utcoffset() == timezone.utc.utcoffset(None), f"timestamp must be in UTC, got {text!r}.")


def to_frame(records: list[dict]) -> pd.DataFrame:
    """Validated records as a DataFrame with the schema's columns and dtypes (no records: an empty one)."""
    rows = [_check(dict(r)) for r in records]
    return pd.DataFrame(rows, columns=list(RECORD_COLUMNS)).astype(DTYPES)


def recorded(run_dir: Path) -> bool:
    """Whether a run has written its records (a finished run)."""
    return paths.records_file(run_dir).is_file()


def write_records(run_dir: Path, records: list[dict], path: Path | None = None) -> Path:
    """Atomically replace the run's records file (or `path`) with these records: a rerun never duplicates
    rows."""
    frame = to_frame(records)
    repeated = _measured_twice(frame)
    if not repeated.empty:
        raise InputError(
            f"{len(repeated)} records measure the same thing more than once (e.g. {_measurement(repeated.iloc[0])})."
        )
    return write_text(path or paths.records_file(run_dir), frame.to_csv(index=False, lineterminator="\n"))


class UnreadableRecordsError(InputError):
    """Run directories whose records cannot be read: `problems` names each with its cause."""

    def __init__(self, root: Path, problems: list[str], remedy: str = ""):
        self.root, self.problems = root, problems
        super().__init__(f"{unreadable_phrase(root, problems)}{f'; {remedy}' if remedy else ''}.")


def unreadable_phrase(root: Path, problems: list[str]) -> str:
    """The run directories under `root` that cannot be read, each with its cause, as a phrase."""
    many = len(problems) > 1
    return (
        f"Cannot read {len(problems) if many else 'one'} run director{'ies' if many else 'y'} under {root}: "
        + "; ".join(problems)
    )


def _measured_twice(frame: pd.DataFrame) -> pd.DataFrame:
    """The records of a run that share their identity: a run measures each thing once."""
    return frame[frame.duplicated(list(IDENTITY), keep=False)]


def _measurement(row) -> str:
    corrupted = f" on {row.corruption} severity {row.severity}" if row.corruption else ""
    return f"{row.ticket} level {row.level} {row.regime} {row.metric} {row.checkpoint}{corrupted} seed {row.seed}"


def load(root: Path, pattern: str = paths.RECORDS, *, skip_unreadable: bool = False, say=print) -> pd.DataFrame:
    """Every records file under `root` (path order, then file order); a missing or empty root gives no rows.
    `pattern` names other files of records, e.g. the AutoAttack checks (`paths.AUTOATTACK_RECORDS`).

    A run directory that cannot be read (a folder that cannot be listed, a records file that cannot be opened,
    damaged records) raises `UnreadableRecordsError`, naming each with its cause, so that no table is made
    without them unawares; with `skip_unreadable` they are left out and `say` is told which."""
    root = Path(root)
    files, problems = _records_files(root, pattern)
    frames = []
    for path in files:
        try:
            frames.append(_read_records(path))
        except OSError as err:
            problems.append(f"{path} (cannot be opened: {_cause(err)})")
        except InputError as err:
            problems.append(phrase(err))
    if problems and not skip_unreadable:
        raise UnreadableRecordsError(root, problems)
    if problems:
        say(f"{unreadable_phrase(root, problems)}; left out.")
    if not frames:
        return to_frame([])
    return pd.concat(frames, ignore_index=True).astype(DTYPES)


def _records_files(root: Path, pattern: str) -> tuple[list[Path], list[str]]:
    """The files named like `pattern` under `root` in path order, and a phrase per folder that cannot be
    listed (`Path.rglob` passes over those without a word)."""
    if not root.is_dir():
        return [], []
    found, problems = [], []

    def unlisted(err: OSError) -> None:
        problems.append(f"{err.filename} (cannot be listed: {_cause(err)})")

    for folder, _, names in os.walk(root, onerror=unlisted):
        found += [Path(folder) / name for name in fnmatch.filter(names, pattern)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix()), problems


def _cause(err: OSError) -> str:
    """An OS error's cause in words ("permission denied")."""
    return (err.strerror or str(err)).lower()


def _read_records(path: Path) -> pd.DataFrame:
    try:
        header = pd.read_csv(path, nrows=0).columns
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty; it should hold a header with the record columns.") from None
    # Records written before precision had a column of its own name it in their device ("cuda, bf16 autocast").
    derived = {"precision"} - set(header) if "device" in header else set()
    derived |= set(ADDED_LATER) - set(header)
    if sorted({*header, *derived}) != sorted(RECORD_COLUMNS):
        extra, lacking = sorted(set(header) - set(SCHEMA)), sorted(set(SCHEMA) - set(header) - derived)
        raise InputError(f"{path} has the wrong columns (unexpected {extra}, missing {lacking}).")
    try:
        frame = pd.read_csv(path, dtype={k: DTYPES[k] for k in header}, keep_default_na=False)
    except ValueError as err:
        raise InputError(f"{path} holds a value of the wrong type: {err}.") from None
    if "precision" in derived:
        frame["precision"] = frame.device.map(lambda device: "bf16" if "bf16" in device else "fp32")
    for name in derived & set(ADDED_LATER):
        frame[name] = ADDED_LATER[name]
    frame = frame[list(RECORD_COLUMNS)]
    for i, row in enumerate(frame.to_dict("records")):
        try:
            _check(row)
        except InputError as err:
            raise InputError(f"{path}, line {i + 2}: {err}") from None
    repeated = _measured_twice(frame)
    if not repeated.empty:
        lines = ", ".join(str(i + 2) for i in repeated.index)
        raise InputError(f"{path}, lines {lines}: one measurement recorded twice ({_measurement(repeated.iloc[0])}).")
    return frame


REFERENCE_PATH = Path(__file__).resolve().parent.parent / "results" / "paper_reference.csv"
REFERENCE_COLUMNS = {
    "quantity": "str",
    "pretraining": "str",
    "dataset": "str",
    "level": "int64",
    "sparsity": "float64",
    "source": "str",
}


def paper_reference(path: Path | None = None) -> pd.DataFrame:
    """The paper's known numbers (PROTOCOL.md section 8); default: the repository's results/ folder."""
    path = Path(path) if path is not None else REFERENCE_PATH
    if not path.is_file():
        raise MissingInputError(f"{path} not found; it ships in the repository's results/ folder.")
    frame = pd.read_csv(path, dtype=REFERENCE_COLUMNS, keep_default_na=False)
    if sorted(frame.columns) != sorted(REFERENCE_COLUMNS):
        raise InputError(f"{path} must have the columns {list(REFERENCE_COLUMNS)}.")
    return frame[list(REFERENCE_COLUMNS)]


# What one cell of a table measures, whatever its seed: two records of one cell and seed are the same
# measurement made twice. Its precision is part of it: cells computed in bf16 and in fp32 are never averaged
# together.
CELL_KEYS = (
    "profile",
    "pretraining",
    "dataset",
    "stands_for",
    "regime",
    "data_fraction",
    "subset",
    "ticket",
    "level",
    "sparsity",
    "metric",
    "checkpoint",
    "attack",
    "deviations",
    "sparsity_denominator",
    "precision",
)
SUMMARY_COLUMNS = ("mean", "sd", "n", "ci95_low", "ci95_high", "seeds")


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (`CELL_KEYS`) and quantity: the mean over its seeds, their sample standard deviation
    `sd`, the number of seeds `n`, the 95% confidence interval of the mean from Student's t with n − 1
    degrees of freedom (`ci95_low`, `ci95_high`), and the seeds themselves. With one seed, sd and the
    interval are NaN. A cell measured twice for one seed (two runs) is refused, as the decision refuses it."""
    keys = list(CELL_KEYS)
    if records.empty:
        return pd.DataFrame(columns=[*keys, *SUMMARY_COLUMNS])
    _refuse_repeats(records, keys, "summarizing")
    cells = records.groupby(keys, sort=True, dropna=False)
    table = cells.agg(
        mean=("value", "mean"),
        sd=("value", "std"),
        n=("value", "size"),
        seeds=("seed", lambda s: ",".join(map(str, sorted(s)))),
    ).reset_index()
    half = stats.t.ppf(0.975, table.n - 1) * table.sd / np.sqrt(table.n)  # NaN for one seed
    table["ci95_low"], table["ci95_high"] = table["mean"] - half, table["mean"] + half
    return table[[*keys, *SUMMARY_COLUMNS]]


def double_win_table(
    df: pd.DataFrame,
    *,
    tol: float = 0.0,
    adv_checkpoint: str = "best_ra",
    ticket: str = "imp",
    rule: str = "tol",
    std_data: str = "budget",
) -> pd.DataFrame:
    """One row per group, setting and ticket level: the three ticket values, the three dense values (means
    over seeds, with their counts `*_n`), each condition `*_ok` (NA when a value is missing) and the status
    "double-win", "not" or "missing".

    A ticket is compared with the dense model trained by the same recipe in each regime. Standard and
    adversarial transfer have their own recipes, so a run that shortens them deviates differently in each;
    the row's `deviations` names both (`std transfer: ...; adv transfer: ...`) and the ticket's ladder's.
    With `std_data="all"` a data-limited group reads standard transfer from the full-data cells, as the official
    code trains it (`vocabulary.STD_DATA`); the row's `std_data` says which was read."""
    _require(rule in RULES, f"rule must be one of {list(RULES)}, got {rule!r}.")
    _require(std_data in STD_DATA, f"std_data must be one of {list(STD_DATA)}, got {std_data!r}.")
    rows = _decision_rows(df, tol=tol, adv_checkpoint=adv_checkpoint, ticket=ticket)
    if std_data == "all":
        rows = _full_data_std(rows)
    base = [k for k in GROUP_KEYS if k != "deviations"]
    parts = rows.deviations.str.split("; ")
    rows["ladder_dev"] = parts.map(lambda ps: "; ".join(p for p in ps if p.startswith(LADDER_DEVIATION)))
    rows["transfer_dev"] = parts.map(lambda ps: "; ".join(p for p in ps if p and not p.startswith(LADDER_DEVIATION)))

    # Every level of a ladder meets every recipe its tickets were transferred with, in each regime, so that a
    # level missing under one recipe shows as missing there.
    tickets = rows[rows.ticket == ticket]
    grid = tickets[[*base, "ladder_dev", "level"]].drop_duplicates()
    for regime, column in RECIPE_COLUMN.items():
        recipes = tickets[tickets.regime == regime][[*base, "ladder_dev", "transfer_dev"]].drop_duplicates()
        grid = grid.merge(recipes.rename(columns={"transfer_dev": column}), on=[*base, "ladder_dev"], how="left")
        grid[column] = grid[column].fillna("")
    # Mean over seeds and seed count per cell and quantity
    cells = rows.groupby([*base, "ladder_dev", "transfer_dev", "ticket", "level", "quantity"])
    means = cells.agg(
        value=("value", "mean"), n=("seed", "size"), sd=("value", "std"), runs=("run_id", joined_runs)
    ).reset_index()
    table = grid
    for q, (regime, _) in DECIDED_VALUES.items():
        recipe = RECIPE_COLUMN[regime]
        of_q = means[means.quantity == q].rename(
            columns={"transfer_dev": recipe, "value": q, "n": f"{q}_n", "sd": f"{q}_sd", "runs": f"{q}_runs"}
        )
        ticket_q = of_q[of_q.ticket == ticket].drop(columns=["ticket", "quantity"])
        dense_q = of_q[of_q.ticket == "dense"].drop(columns=["ticket", "quantity", "level", "ladder_dev"])
        dense_q = dense_q.rename(
            columns={
                q: f"{q}_dense",
                f"{q}_n": f"{q}_dense_n",
                f"{q}_sd": f"{q}_dense_sd",
                f"{q}_runs": f"{q}_dense_runs",
            }
        )
        table = table.merge(ticket_q, on=[*base, "ladder_dev", recipe, "level"], how="left")
        table = table.merge(dense_q, on=[*base, recipe], how="left")
    table["ticket"] = ticket
    table["deviations"] = [
        _setting(std, adv, ladder) for std, adv, ladder in zip(table.std_dev, table.adv_dev, table.ladder_dev)
    ]
    sparsity = _one_per(tickets, [*base, "ladder_dev", "level"], "sparsity")
    table = table.merge(sparsity, on=[*base, "ladder_dev", "level"])
    table = table.merge(_one_per(rows, base, "sparsity_denominator"), on=base, how="left")
    ra_rows = rows[rows.quantity == "ra_adv"].rename(columns={"transfer_dev": "adv_dev"})
    table = table.merge(_one_per(ra_rows, [*base, "adv_dev"], "attack"), on=[*base, "adv_dev"], how="left")

    for q in DECIDED_VALUES:
        ticket_value, dense_value = table[q], table[f"{q}_dense"]
        margin = pd.Series(float(tol), index=table.index)
        if rule == "sd":
            margin = table[f"{q}_dense_sd"].clip(lower=tol)  # NaN with one dense seed: undecided
        ok = (ticket_value >= dense_value - margin - TIE_MARGIN).astype("boolean")
        table[f"{q}_ok"] = ok.mask(ticket_value.isna() | dense_value.isna() | margin.isna())
        for n in (f"{q}_n", f"{q}_dense_n"):
            table[n] = table[n].astype("Int64")
    oks = table[[f"{q}_ok" for q in DECIDED_VALUES]]
    table["status"] = np.where(
        oks.isna().any(axis=1), "missing", np.where(oks.fillna(False).all(axis=1), "double-win", "not")
    )
    table["adv_checkpoint"], table["tol"], table["rule"], table["std_data"] = adv_checkpoint, float(tol), rule, std_data
    behind = table[[f"{q}{part}_runs" for q in DECIDED_VALUES for part in ("", "_dense")]]
    table["run_ids"] = [joined_runs(" ".join(ids.dropna()).split()) for _, ids in behind.iterrows()]

    keys = list(GROUP_KEYS)
    per_value = [
        c
        for q in DECIDED_VALUES
        for c in (q, f"{q}_n", f"{q}_sd", f"{q}_dense", f"{q}_dense_n", f"{q}_dense_sd", f"{q}_ok")
    ]
    columns = [
        *keys,
        "ticket",
        "level",
        "sparsity",
        "sparsity_denominator",
        "attack",
        "adv_checkpoint",
        "tol",
        "rule",
        "std_data",
        *per_value,
        "status",
        "run_ids",
    ]
    return table[columns].sort_values([*keys, "level"], ignore_index=True)


def joined_runs(run_ids) -> str:
    """The run directories (`run_id`, relative to the run root) behind a row, each once, space-separated."""
    return " ".join(sorted(set(run_ids)))


def _setting(std: str, adv: str, ladder: str) -> str:
    """How a double-win row departs from the protocol, in words ("" when it follows it)."""
    said = [f"{name} transfer: {dev}" for name, dev in (("std", std), ("adv", adv)) if dev]
    return "; ".join([*said, *([ladder] if ladder else [])])


def _decision_rows(df: pd.DataFrame, *, tol: float, adv_checkpoint: str, ticket: str) -> pd.DataFrame:
    """The records the decision reads, each tagged with its quantity; the same cell twice is an error."""
    valid_tol = isinstance(tol, numbers.Real) and math.isfinite(tol) and tol >= 0
    _require(valid_tol, f"tol must be a number >= 0 (percentage points), got {tol!r}.")
    _require(
        adv_checkpoint in CHOICES["checkpoint"],
        f"adv_checkpoint must be one of {list(CHOICES['checkpoint'])}, got {adv_checkpoint!r}.",
    )
    tickets = [t for t in CHOICES["ticket"] if t != "dense"]
    _require(ticket in tickets, f"ticket must be one of {tickets}, got {ticket!r}.")
    lacking = [c for c in RECORD_COLUMNS if c not in df.columns]
    _require(not lacking, f"the records lack column(s) {lacking}; read them with results.load().")

    checkpoint = {"std": "best_sa", "adv": adv_checkpoint}
    rows = pd.concat(
        [
            df[
                (df.regime == regime)
                & (df.metric == metric)
                & (df.checkpoint == checkpoint[regime])
                & df.ticket.isin(["dense", ticket])
            ].assign(quantity=q)
            for q, (regime, metric) in DECIDED_VALUES.items()
        ],
        ignore_index=True,
    )
    _refuse_repeats(rows, [*GROUP_KEYS, "ticket", "level", "quantity"], "deciding double-win")
    return rows


def _full_data_std(rows: pd.DataFrame) -> pd.DataFrame:
    """The decision's rows with standard transfer of every data-limited group read from the full-data cells of
    its profile, pre-training, data set and precision (the budget's own standard-transfer records are left out)."""
    std = rows.quantity == "sa_std"
    full = rows[std & (rows.data_fraction == 1)]
    same = ["profile", "pretraining", "dataset", "stands_for", "precision"]
    budgets = rows[~std & (rows.data_fraction < 1)][[*same, "data_fraction", "subset"]].drop_duplicates()
    borrowed = full.drop(columns=["data_fraction", "subset"]).merge(budgets, on=same)
    return pd.concat([rows[~std | (rows.data_fraction == 1)], borrowed[rows.columns]], ignore_index=True)


def _refuse_repeats(rows: pd.DataFrame, cell: list[str], before: str) -> None:
    """Two runs measuring the same cell with the same seed would be averaged as if they were two seeds."""
    repeated = rows[rows.duplicated([*cell, "seed"], keep=False)]
    if not repeated.empty:
        raise InputError(
            f"{len(repeated)} records measure the same cell with the same seed (runs "
            f"{sorted(repeated.run_id.unique())[:4]}); keep one run per cell before {before}."
        )


def _one_per(rows: pd.DataFrame, keys: list[str], column: str) -> pd.DataFrame:
    """The single value of `column` in each group of `keys`; several values mean incomparable records."""
    grouped = rows.groupby(keys)[column]
    counts = grouped.nunique()
    if (counts > 1).any():
        where = dict(zip(keys, counts[counts > 1].index[0]))
        raise InputError(f"records of {where} mix several {column} values; select one before deciding double-win.")
    return grouped.first().reset_index()


def highest_double_win(df: pd.DataFrame, **options) -> pd.DataFrame:
    """One row per group: the largest double-win sparsity and its level (NaN/NA when none), the smallest
    sparsity that is "not" (`first_failure_*`), how many levels were missing, `missing_above`: True
    when a level above the reported threshold (or, with no double-win, any level) is missing, so the true
    threshold may be higher, and `failure_below`: True when a "not" level sits below the threshold. The
    options are `double_win_table`'s, and each row names them."""
    table = double_win_table(df, **options)
    keys = list(GROUP_KEYS)
    settings = ["ticket", "sparsity_denominator", "adv_checkpoint", "tol", "rule", "std_data"]
    rows = []
    for key, levels in table.groupby(keys, sort=True):
        wins, fails = levels[levels.status == "double-win"], levels[levels.status == "not"]
        missing = levels[levels.status == "missing"]
        best = wins.loc[wins.sparsity.idxmax()] if not wins.empty else None
        first_failure = fails.loc[fails.sparsity.idxmin()] if not fails.empty else None
        rows.append(
            {
                **dict(zip(keys, key)),
                **levels[settings].iloc[0].to_dict(),
                "highest_sparsity": best.sparsity if best is not None else np.nan,
                "highest_level": best.level if best is not None else pd.NA,
                "first_failure_sparsity": first_failure.sparsity if first_failure is not None else np.nan,
                "first_failure_level": first_failure.level if first_failure is not None else pd.NA,
                "n_levels": len(levels),
                "run_ids": joined_runs(" ".join(levels.run_ids).split()),
                "n_missing": len(missing),
                "missing_above": bool((missing.sparsity > best.sparsity).any())
                if best is not None
                else not missing.empty,
                # Double-win came back above a failure: a search that bisects the ladder assumes it never does.
                "failure_below": best is not None
                and first_failure is not None
                and first_failure.sparsity < best.sparsity,
            }
        )
    columns = [
        *keys,
        *settings,
        "highest_sparsity",
        "highest_level",
        "first_failure_sparsity",
        "first_failure_level",
        "n_levels",
        "n_missing",
        "missing_above",
        "failure_below",
        "run_ids",
    ]
    out = pd.DataFrame(rows, columns=columns)
    return out.astype(
        {
            "highest_level": "Int64",
            "first_failure_level": "Int64",
            "highest_sparsity": "float64",
            "first_failure_sparsity": "float64",
            "n_levels": "int64",
            "n_missing": "int64",
            "missing_above": "bool",
            "failure_below": "bool",
        }
    )


def compare_with_paper(highest: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """The reproduced thresholds beside the paper's, per pre-training and data set.

    Only paper-profile IMP rows on the full data that follow the protocol exactly are matched to a paper
    cell; rows of stand-in data sets (the quick profile), data-limited rows and deviating rows are kept, with no
    paper value and a `note` that says why. Paper cells not reproduced yet appear with empty reproduced
    columns."""
    reproduced = highest.rename(
        columns={"highest_sparsity": "reproduced_sparsity", "highest_level": "reproduced_level"}
    )
    paper = reference.rename(columns={"dataset": "stands_for", "sparsity": "paper_sparsity", "level": "paper_level"})
    paper = paper[["pretraining", "stands_for", "paper_sparsity", "paper_level", "source"]]
    # The abstract's numbers are IMP tickets transferred with all the training data.
    comparable = (
        (reproduced.profile == "paper")
        & (reproduced.ticket == "imp")
        & (reproduced.data_fraction == 1.0)
        & (reproduced.deviations == "")
    )

    matched = reproduced[comparable].merge(paper, on=["pretraining", "stands_for"], how="outer")
    matched["note"] = np.select(
        [matched.profile.isna(), matched.paper_level.isna(), matched.missing_above.eq(True)],
        [
            "not reproduced yet",
            "no paper number for this cell",
            "a level above is missing: the threshold may be higher",
        ],
        "",
    )
    matched["profile"] = matched.profile.fillna("paper")
    others = reproduced[~comparable].assign(
        note=lambda d: np.where(
            d.dataset != d.stands_for,
            d.profile + " profile: " + d.dataset + " stands in for " + d.stands_for + "; not comparable with the paper",
            np.where(
                d.deviations != "", "deviates from the protocol: " + d.deviations, "no paper number for this cell"
            ),
        )
    )
    out = pd.concat([matched, others], ignore_index=True)
    out = out.astype(
        {
            "paper_level": "Int64",
            "reproduced_level": "Int64",
            "n_levels": "Int64",
            "n_missing": "Int64",
            "missing_above": "boolean",
            "note": "str",
        }
    )
    out["level_difference"] = out.reproduced_level - out.paper_level

    order = {name: i for i, name in enumerate(CHOICES["pretraining"])}
    out = out.sort_values(
        ["profile", "pretraining", "stands_for", "data_fraction", "subset"],
        key=lambda s: s.map(order) if s.name == "pretraining" else s,
        ignore_index=True,
    )
    first = [
        "profile",
        "pretraining",
        "stands_for",
        "dataset",
        "data_fraction",
        "subset",
        "precision",
        "ticket",
        "paper_sparsity",
        "reproduced_sparsity",
        "paper_level",
        "reproduced_level",
        "level_difference",
        "missing_above",
        "note",
    ]
    return out[first + [c for c in out.columns if c not in first]]
