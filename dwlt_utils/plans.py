"""GPU-hours and wall time of a sweep, a search or the whole paper on N GPUs (`cli plan`), from the costs of
their runs (`costs`).

One job holds one GPU: a sweep cell (its runs one after the other), an IMP ladder (its levels one after the
other; a ladder of N processes is N jobs), or in the exhaustive paper one transfer run. N GPUs take the
longest jobs first (LPT), and stages that wait for the one before them (IMP before transfer, the steps of a
search) add up. A search is priced at its most: the most bisection steps its ladder can take, each level a
fresh one.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from . import paths, search, transfer
from .costs import Pricer, imp_work, run_work
from .errors import InputError, check_number
from .profiles import Profile, get_profile
from .pruning import Mask, printed_sparsity
from .sweeps import Cell, notebook_defaults, session_for
from .tickets import ImpConfig
from .vocabulary import PRETRAININGS, REGIMES

PAPER_BUDGETS = (1.0, 0.1, 0.01)  # PROTOCOL.md section 6: all the data, 10% and 1%


@dataclass(frozen=True)
class Job:
    """One GPU's job: a sweep cell, one transfer run, or an IMP ladder."""

    what: str
    dataset: str
    data_fraction: float
    px: int
    seconds: float  # still to run (0 when done)
    priced_from: str
    done: bool = False


@dataclass
class Stage:
    """Jobs that may all run at once; a stage starts when the one before it has finished."""

    name: str
    jobs: list[Job] = field(default_factory=list)
    repeat: int = 1  # stages alike, one after the other (the steps of a search)

    def gpu_hours(self) -> float:
        return self.repeat * sum(job.seconds for job in self.jobs) / 3600

    def wall_hours(self, gpus: int) -> float:
        return self.repeat * makespan([job.seconds for job in self.jobs if not job.done], gpus) / 3600


def makespan(durations: Iterable[float], gpus: int) -> float:
    """The finishing time of jobs on `gpus` GPUs, each next-longest job to the GPU free first (LPT)."""
    loads = [0.0] * gpus
    for duration in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + duration)
    return max(loads)


@dataclass
class Plan:
    title: str
    stages: list[Stage]
    notes: list[str] = field(default_factory=list)

    def gpu_hours(self) -> float:
        return sum(stage.gpu_hours() for stage in self.stages)

    def wall_hours(self, gpus: int) -> float:
        return sum(stage.wall_hours(gpus) for stage in self.stages)

    def table(self) -> pd.DataFrame:
        """A row per stage and kind of job: how many, how many done, hours each, GPU-hours still to run."""
        rows = [
            {
                "stage": stage.name,
                **{k: getattr(job, k) for k in ("what", "dataset", "data_fraction", "px")},
                "priced_from": job.priced_from,
                "seconds": job.seconds,
                "done": job.done,
            }
            for stage in self.stages
            for job in stage.jobs * stage.repeat
        ]
        keys = ["stage", "what", "dataset", "data_fraction", "px", "priced_from"]
        frame = pd.DataFrame(rows, columns=[*keys, "seconds", "done"])
        grouped = frame.groupby(keys, sort=False)
        table = grouped.agg(jobs=("done", "size"), done=("done", "sum"), gpu_h=("seconds", "sum")).reset_index()
        to_run = table.jobs - table.done
        table["h_each"] = (table.gpu_h / to_run.where(to_run > 0)).fillna(0.0) / 3600
        table["gpu_h"] = table.gpu_h / 3600
        return table[[*keys[:5], "jobs", "done", "h_each", "gpu_h", "priced_from"]]

    def describe(self, gpus: int) -> str:
        lines = [self.title]
        with pd.option_context(
            "display.max_colwidth", 60, "display.width", 200, "display.float_format", "{:,.3f}".format
        ):
            lines.append(self.table().to_string(index=False))
        for stage in self.stages:
            lines.append(
                f"  {stage.name}: {stage.gpu_hours():,.2f} GPU-hours still to run, {_duration(stage.wall_hours(gpus))} "
                f"on {gpus} GPU{'s' * (gpus != 1)}"
            )
        lines.append(
            f"Total: {self.gpu_hours():,.2f} GPU-hours still to run, {_duration(self.wall_hours(gpus))} of wall time "
            f"on {gpus} GPU{'s' * (gpus != 1)} (one GPU per job, stages one after the other)."
        )
        return "\n".join(lines + self.notes)


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.1f} min"
    return f"{hours:,.2f} h" if hours < 48 else f"{hours:,.1f} h ({hours / 24:,.1f} days)"


# ---- what a sweep, a search and the paper run


def _defaults_05(fixed: dict[str, Any]) -> dict[str, Any]:
    return {**notebook_defaults(search.NOTEBOOK), **fixed}


def _cell_05(fixed: dict[str, Any], seed: int) -> dict[str, Any]:
    """The parameters of a notebook 05 cell of one group and seed, both regimes (as a search runs it)."""
    return {**_defaults_05(fixed), "seed": seed, "regimes": list(REGIMES)}


class _Runs:
    """Transfer runs priced once each: a dense baseline that several cells share is one job."""

    def __init__(self, pricer: Pricer):
        self.pricer, self.seen = pricer, set()

    def price(self, notebook: str, parameters: dict[str, Any], *, fresh: bool = False) -> list[Job]:
        """The notebook's runs for these parameters not priced before; `fresh`: its ticket runs only, priced
        whole whatever is on disk (a level a search has not chosen yet)."""
        session = session_for(parameters)
        jobs = []
        for config, directory in transfer.notebook_runs(notebook, parameters, session):
            if fresh and config.ticket == "dense" or not fresh and directory in self.seen:
                continue
            self.seen.add(directory)
            done = not fresh and transfer.run_finished(config, directory)
            seconds, source = self.pricer.seconds(session.profile, config.regime, run_work(config))
            jobs.append(
                Job(
                    f"{config.regime} transfer",
                    config.dataset,
                    config.data_fraction,
                    session.profile.transforms.size,
                    0.0 if done else seconds,
                    source,
                    done,
                )
            )
        return jobs


def _merged(jobs: list[Job], what: str) -> Job:
    """The runs of one cell as one job (a cell runs them one after the other on its GPU)."""
    first = jobs[0]
    return Job(
        what,
        first.dataset,
        first.data_fraction,
        first.px,
        sum(j.seconds for j in jobs),
        first.priced_from,
        all(j.done for j in jobs),
    )


def ladder_jobs(
    ladder: ImpConfig, profile: Profile, roots: paths.Roots, seed: int, levels: int, pricer: Pricer
) -> list[Job]:
    """The IMP levels of a ladder still to train, up to `levels`, one after the other: one job, or on N
    processes (DDP) N jobs of a share each, which run side by side (perfect scaling, an optimistic bound)."""
    directory = roots.imp_ladder(ladder, seed)
    trainings = sum(not Mask.exists(paths.level_dir(directory, k)) for k in range(2, levels + 1))
    seconds, source = pricer.seconds(profile, ladder.variant, imp_work(ladder, trainings))
    what = f"{ladder.variant.upper()} of {ladder.pretraining} to level {levels}"
    if ladder.processes > 1:
        what += f", process of {ladder.processes}"
    share = seconds / ladder.processes
    size = profile.transforms.size
    job = Job(what, profile.source_dataset, ladder.source_fraction, size, share, source, not trainings)
    return [job] * ladder.processes


def sweep_plan(cells: list[Cell], pricer: Pricer) -> Plan:
    """The jobs of a sweep's cells: notebook 02 (ladders) or 03-05 (transfer runs)."""
    runs, jobs = _Runs(pricer), []
    for cell in cells:
        parameters = {**notebook_defaults(cell.notebook), **cell.parameters}
        name = cell.notebook.stem
        if name == "02_imp":
            session = session_for(parameters)
            ladder = ImpConfig.from_notebook(session.profile, parameters)
            levels = parameters["levels"] or session.profile.levels
            jobs += ladder_jobs(ladder, session.profile, session.roots, session.seed, levels, pricer)
        elif name in (*transfer.NOTEBOOK_REGIMES, search.NOTEBOOK.stem):
            cell_jobs = runs.price(name, parameters)
            if cell_jobs:
                jobs.append(_merged(cell_jobs, " + ".join(dict.fromkeys(j.what for j in cell_jobs))))
        else:
            raise InputError(
                f"plan prices the notebooks that train (02 to 05); {cell.notebook.name} takes minutes and is not "
                "planned."
            )
    return Plan(f"Plan of {len(cells)} cells of {cells[0].notebook.name}:", [Stage(cells[0].notebook.stem, jobs)])


def worst_bisection(top_level: int) -> int:
    """The most levels a search of levels 1..top_level decides (whatever the threshold)."""
    return max(len(search.bisection_levels(top_level, highest)) for highest in range(top_level + 1))


def _search_stages(
    groups: list[dict[str, Any]], top_level: int, seeds: list[int], pricer: Pricer, confirm: bool
) -> list[Stage]:
    """Searches of several groups side by side: their dense cells, then each bisection step's cells."""
    runs = _Runs(pricer)
    dense, step = Stage("dense models"), []
    for fixed in groups:
        for seed in seeds:
            base = _cell_05(fixed, seed)
            dense_jobs = runs.price(search.NOTEBOOK.stem, {**base, "ticket": "dense", "sparsity": 0})
            if dense_jobs:
                dense.jobs.append(_merged(dense_jobs, "dense, std + adv transfer"))
            level = {**base, "ticket": "imp", "sparsity": printed_sparsity(top_level)}
            step.append(_merged(runs.price(search.NOTEBOOK.stem, level, fresh=True), "ticket, std + adv transfer"))
    steps = worst_bisection(top_level) + (2 if confirm else 0)
    # Which level a step decides is known only after the step before it: each is priced as a level to run.
    return [dense, Stage(f"{steps} bisection steps", step, repeat=steps)]


def _ladder_stage(fixed_groups: list[dict[str, Any]], top_level: int, pricer: Pricer) -> Stage:
    """The IMP ladders the groups' tickets come from, each once, up to `top_level`."""
    stage, seen = Stage("IMP ladders"), set()
    for fixed in fixed_groups:
        ladder, session = search.ladder_needed(fixed, top_level)
        if (ladder, session.seed) not in seen:
            seen.add((ladder, session.seed))
            stage.jobs += ladder_jobs(ladder, session.profile, session.roots, session.seed, top_level, pricer)
    return stage


def search_plan(
    fixed: dict[str, Any], *, top_level: int, seeds: list[int], pricer: Pricer, confirm: bool = False
) -> Plan:
    """The most a search (`search.search`) costs: its ladder where levels are missing, its dense cells, and
    the most bisection steps its ladder can take, each step a cell per seed."""
    check_number("top level", top_level, 1, 40, integer=True)
    stages = [_ladder_stage([fixed], top_level, pricer), *_search_stages([fixed], top_level, seeds, pricer, confirm)]
    steps = stages[-1].repeat
    cells, exhaustive = (1 + steps) * len(seeds), (top_level + 1) * len(seeds)
    notes = [
        f"At most {cells} cells of notebook 05 instead of {exhaustive} for every level: a ladder of {top_level} levels "
        f"takes at most {worst_bisection(top_level)} bisection steps{' and the 2 of --confirm' if confirm else ''}."
    ]
    return Plan(f"Plan of the search of {search.group_name(fixed)}:", [s for s in stages if s.jobs], notes)


def paper_groups(fixed: dict[str, Any]) -> tuple[Profile, list[dict[str, Any]]]:
    """Every (pre-training, data set, data budget) of the paper that the profile runs."""
    profile = get_profile(_defaults_05(fixed)["quick"])
    groups = [
        {**fixed, "pretraining": p, "dataset": d, "data_fraction": b}
        for p in PRETRAININGS
        for d in profile.paper_datasets
        for b in PAPER_BUDGETS
    ]
    return profile, groups


def paper_plans(fixed: dict[str, Any], *, seeds: list[int], pricer: Pricer) -> tuple[Plan, Plan]:
    """The whole paper (every group of `paper_groups`, both regimes, its ladders): every level, and by search."""
    profile, groups = paper_groups(fixed)
    top = profile.levels
    ladders = _ladder_stage(groups, top, pricer)
    runs, every = _Runs(pricer), Stage("transfer, every level")
    for fixed_group in groups:
        for seed in seeds:
            base = _cell_05(fixed_group, seed)
            every.jobs += runs.price(search.NOTEBOOK.stem, {**base, "ticket": "dense", "sparsity": 0})
            for level in range(1, top + 1):
                every.jobs += runs.price(
                    search.NOTEBOOK.stem, {**base, "ticket": "imp", "sparsity": printed_sparsity(level)}
                )
    what = (
        f"{len(PRETRAININGS)} pre-trainings × {len(profile.paper_datasets)} data sets × {len(PAPER_BUDGETS)} data "
        f"budgets × {len(seeds)} seed{'s' * (len(seeds) != 1)}, {profile.name} profile"
    )
    exhaustive = Plan(
        f"The whole paper, every level 0-{top} of every group ({what}):",
        [ladders, every],
        [f"{len(every.jobs)} transfer runs, one job each."],
    )
    searched = _search_stages(groups, top, seeds, pricer, confirm=False)
    cells = sum(len(s.jobs) * s.repeat for s in searched)
    by_search = Plan(
        f"The whole paper by search, every group searched at once ({what}):",
        [ladders, *searched],
        [
            f"At most {cells} cells of notebook 05 (both regimes each) instead of "
            f"{len(groups) * (top + 1) * len(seeds)}: "
            f"at most {worst_bisection(top)} bisection steps per group, the groups' steps run side by side."
        ],
    )
    return exhaustive, by_search
