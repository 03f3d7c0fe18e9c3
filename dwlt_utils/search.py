"""The highest double-win level of one (pre-training, data set, data budget), found by bisecting the IMP
ladder instead of transferring every level.

Each step executes notebook 05 once per seed (standard and adversarial transfer at the group's data
budget, so that the three conditions of double-win are decided), each execution submitted as a sweep submits
its own (`sweeps`): first the dense models, then ticket levels in bisection order. Level 0 (the dense model)
counts as double-win and the level above the last one searched as "not"; each step halves the bracket, and
the search stops when a double-win level and the "not" level just above it enclose the threshold. Bisection
assumes that double-win does not come back above a failure; `confirm` runs the levels around the answer to
check it, and notebook 06 names every recorded group where it does come back (`report.non_monotone`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import results, sweeps, tickets, transfer
from .errors import DwltError, InputError, MissingInputError, check_number, phrase
from .notebook import NOTEBOOKS, Parameters, Session, open_session
from .paths import slug
from .pruning import printed_sparsity
from .sweeps import Execution, SlurmOptions, execution_status, planned, run_local, submit_slurm, to_submit

NOTEBOOK = NOTEBOOKS / "05_data_limited.ipynb"
SLURM_POLL_S = 30


@dataclass
class Search:
    """What a search ran and found; `levels` maps each level it decided to its status."""

    top_level: int
    levels: dict[int, str] = field(default_factory=dict)
    executions_run: int = 0
    wall_s: dict[int, float] = field(default_factory=dict)  # wall time of each decided level's runs

    @property
    def highest(self) -> int:
        """The highest double-win level (0: none, only the dense model)."""
        wins = [k for k, s in self.levels.items() if s == "double-win"]
        return max(wins, default=0)

    @property
    def bracket(self) -> tuple[int, int]:
        above = [k for k, s in self.levels.items() if s == "not" and k > self.highest]
        return self.highest, min(above, default=self.top_level + 1)

    def summary(self, seeds: int) -> str:
        low, high = self.bracket
        found = (
            f"highest double-win level {low} ({printed_sparsity(low):.2%} sparsity)"
            if low
            else "no double-win level (the dense model only)"
        )
        above = f"level {high} is not double-win" if high <= self.top_level else f"no level above {low} exists"
        decided = len(self.levels)
        per_level = sum(self.wall_s.values()) / max(decided, 1)
        saved = (self.top_level - decided) * per_level / 3600
        return (
            f"{found}; {above}. The search decided {decided} of {self.top_level} levels "
            f"({', '.join(str(k) for k in sorted(self.levels))}): {(decided + 1) * seeds} executions of notebook 05 "
            f"instead of {(self.top_level + 1) * seeds} for every level ({self.executions_run} ran now, the others "
            f"had records). At {per_level / 3600:.3f} h of ticket training per level, that saved about {saved:.3f} "
            "hours of execution time (GPU-hours, with one GPU per execution). Bisection assumes double-win does not "
            "come back above a failure; --confirm runs the levels around the answer."
        )


@dataclass(frozen=True)
class Runner:
    """How executions are run: on this machine (waiting for them) or on Slurm (polling their state)."""

    executor: str = "local"
    parallel: int = 1
    per_gpu: int = 1
    slurm: SlurmOptions = field(default_factory=SlurmOptions)

    def run(self, executions: list[Execution]) -> int:
        """Run the executions that are not done and wait for them; returns how many ran."""
        todo = to_submit(executions)
        if self.executor == "local":
            run_local(todo, parallel=self.parallel, per_gpu=self.per_gpu)
        else:
            submit_slurm(todo, self.slurm)
            while any(execution_status(e)["status"] in ("running", "queued") for e in todo):
                time.sleep(SLURM_POLL_S)
        return len(todo)


def level_parameters(group: dict[str, Any], level: int, seed: int) -> Parameters:
    """Notebook 05's parameters of one level (0: the dense model) and seed, both regimes: one step's execution."""
    ticket = {"ticket": "imp", "sparsity": printed_sparsity(level)} if level else {"ticket": "dense", "sparsity": 0}
    return Parameters.of(NOTEBOOK.stem, {**group, **ticket, "seed": seed, "regimes": ["std", "adv"]})


def level_executions(group: dict[str, Any], level: int, seeds: list[int], out: Path) -> list[Execution]:
    """The executions of one level (0: the dense model), one per seed."""
    folder = out / "search" / group_name(group)
    given = [{**group, **level_parameters(group, level, seed).changed()} for seed in seeds]
    return [
        Execution(NOTEBOOK, parameters, {"level": level, "seed": seed}, folder)
        for parameters, seed in zip(given, seeds)
    ]


def status_table(group: dict[str, Any], *, top_level: int, seeds: list[int], out: Path) -> pd.DataFrame:
    """The state of a search's executions (`sweeps.execution_status`): its dense models' and those of every
    level it has reached (a level with none of its executions submitted or done is left out: bisection may
    never need it)."""
    tables = []
    for level in range(top_level + 1):
        executions = level_executions(group, level, seeds, out)
        table = sweeps.status_table(executions)
        if level == 0 or (table.status != "missing").any() or any(e.state_file.is_file() for e in executions):
            tables.append(table)
    return pd.concat(tables, ignore_index=True)


def group_name(group: dict[str, Any]) -> str:
    return slug({k: group[k] for k in ("pretraining", "dataset", "data_fraction") if k in group})


def _decide(executions: list[Execution], level: int) -> tuple[str, float]:
    """The double-win status of a level from its executions' records (means over seeds), and their wall time."""
    frames = []
    for execution in executions:
        _, made = planned(execution)
        frames += [results.load(d) for config, d in made.runs if made.finished(config, d)]
    records = pd.concat(frames, ignore_index=True) if frames else results.to_frame([])
    table = results.double_win_table(records)
    row = table[table.level == level]
    if row.empty:
        raise MissingInputError(
            f"Level {level} was not decided: its executions left no complete records; see `cli status` and their "
            f"logs in {executions[0].folder}."
        )
    tickets_only = records[records.ticket != "dense"]
    wall = float(tickets_only.groupby("run_id").wall_s.first().sum())
    return str(row.status.iloc[0]), wall


def ladder_needed(group: dict[str, Any], top_level: int) -> tuple[tickets.ImpConfig, Session]:
    """The IMP ladder whose tickets a search's executions transfer, as notebook 05 names it at the top level,
    and a session to find it with."""
    parameters = Parameters.of(NOTEBOOK.stem, {**group, "ticket": "imp", "sparsity": printed_sparsity(top_level)})
    session = open_session(parameters, device="cpu")
    return transfer.plan(session, parameters).cells[0].imp, session


def check_ladder(group: dict[str, Any], top_level: int) -> None:
    """Refuse a search above the IMP ladder that exists: it must reach the highest level searched."""
    ladder, session = ladder_needed(group, top_level)
    try:
        tickets.imp_ticket(ladder, session.roots, session.seed, top_level)
    except DwltError as err:
        raise MissingInputError(f"The search needs the IMP ladder up to level {top_level}: {phrase(err)}.") from None


def bisect(top_level: int, decide: Callable[[int], str]) -> tuple[int, int]:
    """The bracket (highest double-win level, the "not" level above it) of levels 1..top_level, deciding
    the middle of the bracket until it is closed; level 0 counts as double-win, top_level + 1 as "not"."""
    low, high = 0, top_level + 1
    while high - low > 1:
        middle = (low + high) // 2
        if decide(middle) == "double-win":
            low = middle
        else:
            high = middle
    return low, high


def bisection_levels(top_level: int, highest: int) -> list[int]:
    """The levels a search decides, in order, when `highest` is the highest double-win level and double-win
    does not come back above it (what a plan counts)."""
    decided: list[int] = []
    bisect(top_level, lambda k: decided.append(k) or ("double-win" if k <= highest else "not"))
    return decided


def search(
    group: dict[str, Any],
    *,
    top_level: int,
    seeds: list[int],
    out: Path,
    runner: Runner,
    confirm: bool = False,
    say=print,
) -> Search:
    """Bisect levels 1..top_level for the highest double-win level of `group` (a pre-training, data set and
    data budget)."""
    check_number("top level", top_level, 1, 40, integer=True)
    if not seeds:
        raise InputError("--seeds lists at least one seed, e.g. 1 or 1,2,3.")
    check_ladder(group, top_level)
    found = Search(top_level)
    found.executions_run += runner.run(level_executions(group, 0, seeds, out))

    def decide(level: int) -> str:
        executions = level_executions(group, level, seeds, out)
        found.executions_run += runner.run(executions)
        found.levels[level], found.wall_s[level] = _decide(executions, level)
        say(f"level {level} ({printed_sparsity(level):.2%}): {found.levels[level]}")
        return found.levels[level]

    low, high = bisect(top_level, decide)
    if confirm:
        for level in (low - 1, high + 1):  # one below the answer, one above the failure that bounds it
            if 1 <= level <= top_level and level not in found.levels:
                decide(level)
        if any(s == "double-win" for k, s in found.levels.items() if k > high):
            say("A level above the failure is double-win again: bisection's assumption does not hold here.")
    return found
