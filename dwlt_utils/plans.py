"""GPU-hours and wall time of a sweep, a search or the whole paper on N GPUs (`cli plan`), from the costs of
their runs (`costs`).

One job holds one GPU: a sweep's execution (its runs one after the other), an IMP ladder (its levels one
after the other; a ladder of N processes is N jobs), or in the exhaustive paper one transfer run. N GPUs take
the longest jobs first (LPT), and stages that wait for the one before them (IMP before transfer, the steps of
a search) add up. A search is priced at its most: the most bisection steps its ladder can take, each level a
fresh one. When GPUs outnumber the ladders of a search or of the paper, each ladder not yet started is
planned on several processes under DDP (`spread_ladders`). Executions asked for the AutoAttack check
(`-p eval_attack autoattack`) add it to their adversarial runs (`costs.check_work`), and those asked for the
tests on corrupted images (`-p eval_corruptions True`) add them to every run (`costs.corruption_work`). Each run
is priced at its own image size (`-p resolution 32`: 32 px).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from . import autoattack, paths, search, transfer
from .autoattack import AutoAttackCheck
from .corruptions import SEVERITIES
from .costs import Pricer, Work, check_forwards, check_work, corruption_work, run_work
from .errors import InputError, check_number
from .notebook import Parameters, Session, open_session
from .profiles import Profile, get_profile
from .pruning import Mask
from .sweeps import Execution, planned
from .tickets import ImpConfig, LadderPlan, node_split
from .visda import VISDA_FOLDER
from .vocabulary import PRETRAININGS

PAPER_BUDGETS = (1.0, 0.1, 0.01)  # PROTOCOL.md section 6: all the data, 10% and 1%


@dataclass(frozen=True)
class Job:
    """One GPU's job: a sweep's execution, one transfer run, or an IMP ladder."""

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
    per_gpu: int = 1  # jobs sharing each GPU (`--per-gpu`), each holding that share of it

    def gpu_hours(self) -> float:
        return self.repeat * sum(job.seconds for job in self.jobs) / self.per_gpu / 3600

    def wall_hours(self, gpus: int) -> float:
        durations = [job.seconds for job in self.jobs if not job.done]
        return self.repeat * makespan(durations, gpus * self.per_gpu) / 3600


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
                "gpu_s": job.seconds / stage.per_gpu,
                "done": job.done,
            }
            for stage in self.stages
            for job in stage.jobs * stage.repeat
        ]
        keys = ["stage", "what", "dataset", "data_fraction", "px", "priced_from"]
        frame = pd.DataFrame(rows, columns=[*keys, "seconds", "gpu_s", "done"])
        grouped = frame.groupby(keys, sort=False)
        table = grouped.agg(
            jobs=("done", "size"), done=("done", "sum"), seconds=("seconds", "sum"), gpu_h=("gpu_s", "sum")
        ).reset_index()
        to_run = table.jobs - table.done
        table["h_each"] = (table.seconds / to_run.where(to_run > 0)).fillna(0.0) / 3600
        table["gpu_h"] = table.gpu_h / 3600
        return table[[*keys[:5], "jobs", "done", "h_each", "gpu_h", "priced_from"]]

    def describe(self, gpus: int) -> str:
        lines = [self.title]
        with pd.option_context(
            "display.max_colwidth", 60, "display.width", 200, "display.float_format", "{:,.3f}".format
        ):
            lines.append(self.table().to_string(index=False))
        for stage in self.stages:
            shared = f", {stage.per_gpu} jobs sharing each" if stage.per_gpu > 1 else ""
            lines.append(
                f"  {stage.name}: {stage.gpu_hours():,.2f} GPU-hours still to run, {_duration(stage.wall_hours(gpus))} "
                f"on {gpus} GPU{'s' * (gpus != 1)}{shared}"
            )
        lines.append(
            f"Total: {self.gpu_hours():,.2f} GPU-hours still to run, {_duration(self.wall_hours(gpus))} of wall time "
            f"on {gpus} GPU{'s' * (gpus != 1)} ({self._placement()}, stages one after the other)."
        )
        return "\n".join(lines + self.notes)

    def _placement(self) -> str:
        shared = sorted({stage.per_gpu for stage in self.stages} - {1})
        return f"{' or '.join(map(str, shared))} transfer jobs per GPU, else one" if shared else "one GPU per job"


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.1f} min"
    return f"{hours:,.2f} h" if hours < 48 else f"{hours:,.1f} h ({hours / 24:,.1f} days)"


# ---- what a sweep, a search and the paper run


class _Runs:
    """Transfer runs priced once each: a dense baseline that several cells share is one job. An adversarial
    run of an execution that asks for the AutoAttack check carries it too, and every run of one that asks for
    the tests on corrupted images carries them; a shared run priced before without them gets a job of its own
    for the extra tests alone."""

    def __init__(self, pricer: Pricer, per_gpu: int = 1):
        self.pricer, self.per_gpu = pricer, per_gpu
        self.extras_of: dict[Path, set[str]] = {}  # the runs priced, each with the extra tests counted for it
        self.check_forwards: set[int] = set()  # of the checks counted, per test image and kept checkpoint
        self.checks_done = 0
        self.corruptions: set[int] = set()  # of the corruption tests counted, how many corruptions each
        self.corruptions_done = 0
        self.reads_jpegs = False  # whether a run reads VisDA-2017's JPEGs, an input that no price includes

    def price(self, parameters: Parameters, *, fresh: bool = False) -> list[Job]:
        """The runs of a transfer notebook's parameters not priced before; `fresh`: its ticket runs only,
        priced whole whatever is on disk (a level a search has not chosen yet)."""
        session = open_session(parameters, device="cpu")
        return self.price_plan(session.profile, transfer.plan(session, parameters), fresh=fresh)

    def price_plan(self, profile: Profile, made: transfer.TransferPlan, *, fresh: bool = False) -> list[Job]:
        jobs = []
        for config, directory in made.runs:
            if fresh and config.ticket == "dense":
                continue
            trains = fresh or directory not in self.extras_of
            extras = [e for e in _extras(made, config) if fresh or e not in self.extras_of.get(directory, ())]
            if trains or extras:
                self.extras_of.setdefault(directory, set()).update(extras)
                jobs.append(self._job(profile, made, config, directory, fresh, trains, extras))
        return jobs

    def _job(
        self,
        profile: Profile,
        made: transfer.TransferPlan,
        config: transfer.TransferConfig,
        directory: Path,
        fresh: bool,
        trains: bool,
        extras: list[str],
    ) -> Job:
        """One run's job at its image size: its training and tests unless priced before (`trains`), and the
        `extras` asked for, each unless on disk."""
        work, what = Work(), f"{config.regime} transfer" + ("" if trains else " (priced above)")
        if trains and (fresh or not made.finished(config, directory)):
            work += run_work(config)
        if AUTOATTACK in extras:
            work += self._check(made.check, config, directory, fresh)
        if CORRUPTIONS in extras:
            work += self._corruptions(config, directory, fresh)
        what += "".join(f" + {extra}" for extra in extras)
        self.reads_jpegs |= profile.dataset(config.dataset) == VISDA_FOLDER
        px = config.transforms.size
        seconds, source = self.pricer.seconds(profile, config.regime, px, work, per_gpu=self.per_gpu)
        return Job(what, config.dataset, config.data_fraction, px, seconds, source, work == Work())

    def _check(self, check: AutoAttackCheck, config: transfer.TransferConfig, directory: Path, fresh: bool) -> Work:
        """The work of a run's AutoAttack check (none when on disk)."""
        pgd = config.recipe.val_attack
        self.check_forwards.add(check_forwards(pgd, autoattack.AutoAttack(pgd.eps_255)))
        if not fresh and check.done(config, directory):
            self.checks_done += 1
            return Work()
        return check_work(config, check.images)

    def _corruptions(self, config: transfer.TransferConfig, directory: Path, fresh: bool) -> Work:
        """The work of a run's tests on corrupted images (none when on disk)."""
        self.corruptions.add(len(transfer.corruptions_of(config)))
        if not fresh and transfer.corruption_records(config, directory) is not None:
            self.corruptions_done += 1
            return Work()
        return corruption_work(config)

    def notes(self) -> list[str]:
        """What the plan says of the AutoAttack checks and the tests on corrupted images it counted, and of the
        VisDA-2017 runs it priced."""
        notes = []
        if self.check_forwards:
            forwards = " or ".join(f"{f:,}" for f in sorted(self.check_forwards))
            notes.append(
                f"Adversarial runs carry the AutoAttack check ({self.checks_done} done on disk), each kept checkpoint "
                f"counted at {forwards} forwards per test image: an upper bound (every image surviving every attack), "
                "priced at the forward price of adversarial runs (though the check runs in fp32)."
            )
        if self.corruptions:
            sets = " or ".join(f"{n} × {len(SEVERITIES)}" for n in sorted(self.corruptions))
            notes.append(
                f"Runs carry their tests on corrupted images ({self.corruptions_done} done on disk): each kept "
                f"checkpoint on every corruption at every severity ({sets} sets), each set counted as the run's own "
                "test (as many images, SA and in adversarial transfer RA), priced at the forward price of its runs."
            )
        if self.reads_jpegs:
            notes.append(
                "VisDA-2017 runs read their JPEGs through PIL in DataLoader workers, every image of every epoch; their "
                "prices leave that input out (the bench's are of images in device memory, recorded runs' of every data "
                "set together), so the price of those runs may be low."
            )
        return notes


AUTOATTACK, CORRUPTIONS = "AutoAttack", "corruptions"


def _extras(made: transfer.TransferPlan, config: transfer.TransferConfig) -> list[str]:
    """The extra tests a plan asks of one of its runs."""
    return [AUTOATTACK] * bool(made.check and config.regime == "adv") + [CORRUPTIONS] * bool(made.corruptions)


def _merged(jobs: list[Job], kind: str = "") -> Job:
    """The runs of one execution as one job (an execution runs them one after the other on its GPU), named by
    its `kind`, its runs, then the extra tests they carry."""
    first = jobs[0]
    parts = dict.fromkeys(part for job in jobs for part in job.what.split(" + "))
    named = " + ".join(sorted(parts, key=lambda part: part in (AUTOATTACK, CORRUPTIONS)))  # a stable sort
    return Job(
        ", ".join(filter(None, [kind, named])),
        first.dataset,
        first.data_fraction,
        first.px,
        sum(j.seconds for j in jobs),
        first.priced_from,
        all(j.done for j in jobs),
    )


def trainings_left(directory: Path, levels: int) -> int:
    """The levels of a ladder up to `levels` still to train (level 1 is one-shot pruning: no training)."""
    return sum(not Mask.exists(paths.level_dir(directory, k)) for k in range(2, levels + 1))


def ladder_jobs(
    ladder: ImpConfig, profile: Profile, roots: paths.Roots, seed: int, levels: int, pricer: Pricer
) -> list[Job]:
    """The IMP levels of a ladder still to train, up to `levels`, one after the other: one job, or on N
    processes (DDP) N jobs of a share each, which run side by side: perfect scaling, an optimistic bound
    (the processes wait for each other at every step)."""
    trainings = trainings_left(roots.imp_ladder(ladder, seed), levels)
    seconds, source = pricer.ladder_seconds(ladder, trainings)
    what = f"{ladder.variant.upper()} of {ladder.pretraining} to level {levels}"
    if ladder.processes > 1:
        what += f", process of {ladder.processes}"
    share = seconds / ladder.processes
    size = profile.transforms.size
    job = Job(what, profile.source_dataset, ladder.source_fraction, size, share, source, not trainings)
    return [job] * ladder.processes


def ddp_processes(gpus: int, batch: int) -> int:
    """The most processes of a ladder on `gpus` GPUs: a power of two that divides its batch evenly."""
    processes = 1
    while processes * 2 <= gpus and batch % (processes * 2) == 0:
        processes *= 2
    return processes


Ladders = dict[tuple[ImpConfig, int], Session]  # each ladder of a stage and its seed, with a session to find it


def spread_ladders(
    ladders: Ladders, top_level: int, gpus: int
) -> tuple[dict[tuple[ImpConfig, int], ImpConfig], list[str]]:
    """With more GPUs than the ladders of one process still to train, each one not started on disk trains on
    N processes under DDP, N the largest power of two within its share of the GPUs that divides its batch:
    the ladders to price instead, and the notes that say so. A ladder partly trained on one process stays on
    it, since its process count is part of its identity."""
    to_train = {key: s for key, s in ladders.items() if trainings_left(s.roots.imp_ladder(*key), top_level)}
    if gpus <= len(to_train) or any(ladder.processes != 1 for ladder, _ in to_train):
        return {}, []
    started = [key for key, s in to_train.items() if paths.level_trainings(s.roots.imp_ladder(*key))]
    notes = [
        f"{ladder.describe()}, seed {seed}, stays on 1 process: it is partly trained on disk on 1 process, and "
        "a ladder's process count is part of its identity."
        for ladder, seed in started
    ]
    free = [key for key in to_train if key not in started]
    share = (gpus - len(started)) // max(len(free), 1)
    processes = min((ddp_processes(share, ladder.recipe().batch_size) for ladder, _ in free), default=1)
    if processes == 1:
        return {}, notes
    flags = " ".join(f"-p {name} {value}" for name, value in node_split(processes).items())
    notes.insert(
        0,
        f"GPUs outnumber the IMP ladders: {'each' if len(free) > 1 else 'the'} ladder not yet started is planned "
        f"on {processes} GPUs as {processes} DDP processes of a share of its work each (perfect scaling, an "
        f"optimistic bound). Run notebook 02 with {flags}; a ladder's process count is part "
        f"of its identity, so notebooks 03-05 then take -p imp_processes {processes}.",
    )
    return {key: replace(key[0], processes=processes) for key in free}, notes


def sweep_plan(executions: list[Execution], pricer: Pricer, per_gpu: int = 1) -> Plan:
    """The jobs of a sweep's executions: notebook 02 (ladders) or 03-05 (transfer runs, `per_gpu` of them
    sharing each GPU)."""
    runs, jobs = _Runs(pricer, per_gpu), []
    for execution in executions:
        session, made = planned(execution)
        if isinstance(made, LadderPlan):
            if per_gpu > 1:
                raise InputError(
                    f"--per-gpu {per_gpu} prices transfer runs sharing a GPU; an IMP ladder of notebook 02 is priced "
                    "on a GPU of its own (plan it without --per-gpu)."
                )
            jobs += ladder_jobs(made.ladder, session.profile, session.roots, session.seed, made.levels, pricer)
        elif isinstance(made, transfer.TransferPlan):
            execution_jobs = runs.price_plan(session.profile, made)
            if execution_jobs:
                jobs.append(_merged(execution_jobs))
        else:
            raise InputError(
                f"plan prices the notebooks that train (02 to 05); {execution.notebook.name} takes minutes and is not "
                "planned."
            )
    title = f"Plan of {len(executions)} executions of {executions[0].notebook.name}:"
    return Plan(title, [Stage(executions[0].notebook.stem, jobs, per_gpu=per_gpu)], runs.notes())


def worst_bisection(top_level: int) -> int:
    """The most levels a search of levels 1..top_level decides (whatever the threshold)."""
    return max(len(search.bisection_levels(top_level, highest)) for highest in range(top_level + 1))


def _search_stages(
    groups: list[dict[str, Any]], top_level: int, seeds: list[int], runs: _Runs, confirm: bool
) -> list[Stage]:
    """Searches of several groups side by side: their dense models, then each bisection step's executions."""
    dense, step = Stage("dense models", per_gpu=runs.per_gpu), []
    for group in groups:
        for seed in seeds:
            dense_jobs = runs.price(search.level_parameters(group, 0, seed))
            if dense_jobs:
                dense.jobs.append(_merged(dense_jobs, "dense"))
            ticket = search.level_parameters(group, top_level, seed)
            step.append(_merged(runs.price(ticket, fresh=True), "ticket"))
    steps = worst_bisection(top_level) + (2 if confirm else 0)
    # Which level a step decides is known only after the step before it: each is priced as a level to run.
    return [dense, Stage(f"{steps} bisection steps", step, repeat=steps, per_gpu=runs.per_gpu)]


def _ladder_stage(groups: list[dict[str, Any]], top_level: int, pricer: Pricer, gpus: int) -> tuple[Stage, list[str]]:
    """The IMP ladders the groups' tickets come from, each once, up to `top_level`, spread over the GPUs
    (`spread_ladders`), and the notes that say how."""
    ladders: Ladders = {}
    for group in groups:
        ladder, session = search.ladder_needed(group, top_level)
        ladders.setdefault((ladder, session.seed), session)
    spread, notes = spread_ladders(ladders, top_level, gpus)
    stage = Stage("IMP ladders")
    for (ladder, seed), session in ladders.items():
        priced = spread.get((ladder, seed), ladder)
        stage.jobs += ladder_jobs(priced, session.profile, session.roots, seed, top_level, pricer)
    return stage, notes


def search_plan(
    group: dict[str, Any],
    *,
    top_level: int,
    seeds: list[int],
    pricer: Pricer,
    confirm: bool = False,
    gpus: int = 1,
    per_gpu: int = 1,
) -> Plan:
    """The most a search (`search.search`) costs: its ladder where levels are missing, its dense models, and
    the most bisection steps its ladder can take, each step an execution per seed."""
    check_number("top level", top_level, 1, 40, integer=True)
    ladders, ladder_notes = _ladder_stage([group], top_level, pricer, gpus)
    runs = _Runs(pricer, per_gpu)
    stages = [ladders, *_search_stages([group], top_level, seeds, runs, confirm)]
    steps = stages[-1].repeat
    executions, exhaustive = (1 + steps) * len(seeds), (top_level + 1) * len(seeds)
    notes = [
        f"At most {executions} executions of notebook 05 instead of {exhaustive} for every level: a ladder of "
        f"{top_level} levels takes at most {worst_bisection(top_level)} bisection steps"
        f"{' and the 2 of --confirm' if confirm else ''}."
    ]
    title = f"Plan of the search of {search.group_name(group)}:"
    return Plan(title, [s for s in stages if s.jobs], [*ladder_notes, *notes, *runs.notes()])


def paper_groups(given: dict[str, Any]) -> tuple[Profile, list[dict[str, Any]]]:
    """Every (pre-training, data set, data budget) of the paper that the profile runs."""
    profile = get_profile(Parameters.of(search.NOTEBOOK.stem, given)["quick"])
    groups = [
        {**given, "pretraining": p, "dataset": d, "data_fraction": b}
        for p in PRETRAININGS
        for d in profile.paper_datasets
        for b in PAPER_BUDGETS
    ]
    return profile, groups


def paper_plans(
    given: dict[str, Any], *, seeds: list[int], pricer: Pricer, gpus: int = 1, per_gpu: int = 1
) -> tuple[Plan, Plan]:
    """The whole paper (every group of `paper_groups`, both regimes, its ladders): every level, and by search."""
    profile, groups = paper_groups(given)
    top = profile.levels
    ladders, ladder_notes = _ladder_stage(groups, top, pricer, gpus)
    runs, every = _Runs(pricer, per_gpu), Stage("transfer, every level", per_gpu=per_gpu)
    for group in groups:
        for seed in seeds:
            for level in range(top + 1):
                every.jobs += runs.price(search.level_parameters(group, level, seed))
    what = (
        f"{len(PRETRAININGS)} pre-trainings × {len(profile.paper_datasets)} data sets × {len(PAPER_BUDGETS)} data "
        f"budgets × {len(seeds)} seed{'s' * (len(seeds) != 1)}, {profile.name} profile"
    )
    exhaustive = Plan(
        f"The whole paper, every level 0-{top} of every group ({what}):",
        [ladders, every],
        [*ladder_notes, f"{len(every.jobs)} transfer runs, one job each.", *runs.notes()],
    )
    search_runs = _Runs(pricer, per_gpu)
    searched = _search_stages(groups, top, seeds, search_runs, confirm=False)
    executions = sum(len(s.jobs) * s.repeat for s in searched)
    by_search = Plan(
        f"The whole paper by search, every group searched at once ({what}):",
        [ladders, *searched],
        [
            *ladder_notes,
            f"At most {executions} executions of notebook 05 (both regimes each) instead of "
            f"{len(groups) * (top + 1) * len(seeds)}: "
            f"at most {worst_bisection(top)} bisection steps per group, the groups' steps run side by side.",
            *search_runs.notes(),
        ],
    )
    return exhaustive, by_search
