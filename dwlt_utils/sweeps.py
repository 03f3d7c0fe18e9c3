"""Sweeps: a notebook executed once per combination of a parameter grid's values, each execution a submitit
job, on this machine or on a Slurm cluster, and the state of every execution of the grid.

An execution is the notebook executed with one set of parameters (`jobs.Execution`). Its executed notebook,
its job's logs and its state record (`<name>.json`: submitted, started, finished, failed or requeued, with
times, the log and the error's sentence) live in `<run_root>/executed/<notebook>/`, named after the
parameters that vary. An execution is
- done when what it makes exists: for a transfer notebook (03-05) every run it makes has complete records,
  for 02 the ladder has its levels, for the others its job finished;
- running while a run of it holds its lock, or its job's process is alive;
- queued when its job was submitted to Slurm and has not started;
- failed when its job ended without finishing it (an error, a kill, a time limit that was not requeued);
- missing otherwise.
A sweep submits only the executions that are neither done, running nor queued, so running it again after
a crash or a cancelled allocation finishes the grid and redoes nothing. Executions resume from their last
finished epoch; on Slurm a preempted or timed-out job is requeued (submitit's checkpointing) and resumes the
same way.
"""

from __future__ import annotations

import ast
import itertools
import os
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import submitit

from . import io, tickets, transfer
from .errors import DwltError, InputError, MissingInputError, check_number, phrase
from .jobs import Execute, Execution, read_state, submitting, write_state
from .notebook import (
    DEFAULT_RUN_ROOT,
    NOTEBOOKS,
    Parameters,
    Session,
    declared_parameters,
    makes,
    open_session,
    working_root,
)
from .paths import executed_dir, resolve_folder
from .tickets import LadderPlan
from .transfer import TransferPlan

REPO = NOTEBOOKS.parent
STATES = ("done", "running", "queued", "failed", "missing")
LOCAL_TIMEOUT_MIN = 60 * 24 * 30  # a local job is never cut short: a month
POLL_S = 0.5
EXECUTORS = ("local", "slurm")


def note(text: str) -> None:
    """A word on what a command understood, beside its output (on stderr, so the output stays as it is)."""
    print(text, file=sys.stderr, flush=True)


def run_root_of(fixed: dict) -> Path:
    """The run root the notebooks of these parameters use, resolved as they resolve it (the notebooks'
    default run root when the parameters do not set one)."""
    return resolve_folder("run_root", fixed.get("run_root", DEFAULT_RUN_ROOT), working_root())


def existing_run_root(fixed: dict) -> Path:
    """The run root of these parameters, refused when it does not exist: its executions would all read as
    missing, when the likelier cause is a mistyped run_root."""
    root = run_root_of(fixed)
    if not root.is_dir():
        raise MissingInputError(
            f"The run root {root} does not exist, so none of these executions ran there: check -p run_root."
        )
    return root


def sweep_dir(fixed: dict) -> Path:
    """Where a sweep keeps its executed notebooks: in the run root its notebooks use."""
    return executed_dir(run_root_of(fixed))


def grid_executions(notebook_path: Path, fixed: dict, grid: dict[str, list], out: Path) -> list[Execution]:
    """One execution per combination of the grid's values, with the fixed parameters."""
    defaults = declared_parameters(notebook_path)
    unknown = [name for name in [*fixed, *grid] if name not in defaults]
    if unknown:
        raise InputError(f"{notebook_path.name} has no parameter {', '.join(unknown)}; it takes {', '.join(defaults)}.")
    both = [name for name in grid if name in fixed]
    if both:
        raise InputError(f"{', '.join(both)} is given both fixed (-p) and as a grid (--grid); give it once.")
    names = list(grid)
    executions = []
    for values in itertools.product(*(grid[n] for n in names)) if names else [()]:
        varying = dict(zip(names, values))
        executions.append(Execution(notebook_path, {**fixed, **varying}, varying, out / notebook_path.stem))
    return executions


# ---- what each execution's state is


def _alive(state: dict) -> bool:
    """Whether the job process that wrote `state` is still running (only knowable on its own host)."""
    if state.get("host") != socket.gethostname() or not state.get("pid"):
        return False
    try:
        os.kill(state["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# What each kind of notebook makes, named in its metadata (`notebook.makes`): its door from parameters to runs.
DOORS = {"transfer runs": transfer.plan, "an IMP ladder": tickets.plan}


def planned(execution: Execution) -> tuple[Session, TransferPlan | LadderPlan | None]:
    """A CPU session of an execution's parameters and what its notebook makes with them, through the door the
    notebook itself uses (None for a notebook whose results this cannot see: 01, 06); nothing runs."""
    parameters = Parameters.of(execution.notebook.stem, execution.parameters)
    session = open_session(parameters, device="cpu")
    door = DOORS.get(makes(execution.notebook))
    return session, door(session, parameters) if door else None


def _made_so_far(execution: Execution) -> tuple[bool | None, bool, float]:
    """(done, lock held, wall seconds of the runs that are finished) from what the notebook makes; done is
    None for a notebook whose results this cannot see (01, 06): its job's state decides."""
    _, made = planned(execution)
    if made is None:
        return None, False, 0.0
    held = any(io.lock_held(lock) for lock in made.locks())
    done, wall_s = made.progress()
    return done, held, wall_s


def execution_status(execution: Execution) -> dict[str, Any]:
    """The state of one execution (`STATES`), its wall time so far (of its finished runs' records, else of
    its job), the GPU-hours that makes with the GPUs its job asked for, and what to read about it."""
    state = read_state(execution)
    try:
        done, held, wall = _made_so_far(execution)
    except DwltError as err:
        # Parameters its notebook refuses (an InputError) make it invalid: it would fail however it ran.
        return _status_row(execution, "failed", 0.0, 0, str(err), invalid=isinstance(err, InputError))
    job = state.get("state")
    if done or (done is None and job == "finished"):
        status = "done"
    elif held or (job == "started" and _alive(state)):
        status = "running"
    elif job in ("submitted", "requeued") and state.get("executor") == "slurm":
        status = "queued"  # waiting for its first start, or requeued after a preemption or its time limit
    elif job in ("started", "failed", "requeued"):
        status = "failed"
    else:
        status = "missing"
    if not wall and state.get("started_at"):
        end = state.get("ended_at") or time.time()
        wall = end - state["started_at"]
    note = ""
    if status == "failed":
        why = state.get("error") or "its job ended without finishing it (killed, or out of time)"
        note = f"{why} Log: {state.get('log', 'none')}"
    elif status in ("running", "queued"):
        note = f"log: {state.get('log', 'none')}"
    return _status_row(execution, status, wall, state.get("gpus", 0), note)


def _status_row(
    execution: Execution, status: str, wall_s: float, gpus: float, note: str, *, invalid: bool = False
) -> dict:
    return {
        "execution": execution.name,
        "status": status,
        "wall_h": round(wall_s / 3600, 3),
        "gpu_h": round(wall_s * gpus / 3600, 3),
        "note": note,
        "invalid": invalid,
    }


def status_table(executions: list[Execution]) -> pd.DataFrame:
    return pd.DataFrame(
        [execution_status(execution) for execution in executions],
        columns=["execution", "status", "wall_h", "gpu_h", "note"],
    )


# ---- submitting


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    time_min: int = 24 * 60
    array_parallelism: int = 64
    sbatch: dict = field(default_factory=dict)  # any other sbatch option, e.g. {"account": "lab", "qos": "high"}

    def check(self) -> None:
        check_number("--gpus-per-job", self.gpus_per_job, 0, 64, integer=True)
        check_number("--cpus-per-job", self.cpus_per_job, 1, 1024, integer=True)
        check_number("--time (minutes)", self.time_min, 1, 60 * 24 * 30, integer=True)
        check_number("--array-parallelism", self.array_parallelism, 1, 100_000, integer=True)


def to_submit(executions: list[Execution], *, force: bool = False) -> list[Execution]:
    """The executions a sweep submits: those not done, running or queued (every one with `force`). An
    execution whose parameters its notebook refuses stops the sweep before anything is submitted: on Slurm
    each would cost an allocation before failing."""
    states = [execution_status(execution) for execution in executions]
    invalid = [f"{state['execution']} ({phrase(state['note'])})" for state in states if state["invalid"]]
    if invalid:
        raise InputError(
            f"{len(invalid)} of the {len(executions)} executions have parameters their notebook refuses, so nothing "
            f"was submitted: {'; '.join(invalid)}."
        )
    if force:
        return [_forced(execution) for execution in executions]
    return [execution for execution, state in zip(executions, states) if state["status"] in ("failed", "missing")]


def _forced(execution: Execution) -> Execution:
    """An execution whose notebook retrains what it has (for notebooks that take `force`)."""
    if "force" not in declared_parameters(execution.notebook):
        return execution
    return Execution(execution.notebook, {**execution.parameters, "force": True}, execution.varying, execution.folder)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def check_per_gpu(per_gpu: int) -> None:
    check_number("--per-gpu", per_gpu, 1, 64, integer=True)


def gpu_slots(parallel: int, gpus: int, per_gpu: int = 1) -> list[int | None]:
    """The GPU of each of the executions that run at once: at most `parallel`, `per_gpu` on each GPU, spread
    over the GPUs before any is shared (None: no GPU)."""
    if not gpus:
        return [None] * parallel
    return [gpu for _ in range(per_gpu) for gpu in range(gpus)][:parallel]


def run_local(
    executions: list[Execution], *, parallel: int = 1, per_gpu: int = 1, quiet: bool = False
) -> dict[Execution, bool]:
    """Run executions on this machine as submitit local jobs, `parallel` at a time (at most `per_gpu` on each
    GPU when there are GPUs, each job seeing only its own), each with its share of the CPU cores; waits for
    them all and returns whether each finished. An execution that shares its GPU counts its share of it in
    GPU-hours."""
    check_number("--jobs", parallel, 1, 1024, integer=True)
    check_per_gpu(per_gpu)
    gpus = _gpu_count()
    if per_gpu > 1 and not gpus:
        note(f"--per-gpu {per_gpu} changes nothing on a machine without GPUs.")
    slots = gpu_slots(parallel, gpus, per_gpu)
    threads = max(1, (os.cpu_count() or 1) // min(len(slots), max(len(executions), 1)))  # a lone job takes every core
    free, pending, running, finished = list(range(len(slots))), list(executions), {}, {}
    while pending or running:
        while pending and free:
            slot, execution = free.pop(0), pending.pop(0)
            gpu = slots[slot]
            executor = submitit.LocalExecutor(folder=execution.folder / "logs")
            executor.update_parameters(
                timeout_min=LOCAL_TIMEOUT_MIN,
                gpus_per_node=int(gpu is not None),
                visible_gpus=() if gpu is None else (gpu,),
            )
            submitting(execution, "local", 0 if gpu is None else 1 / slots.count(gpu))
            job = executor.submit(Execute(threads), execution)
            running[job] = (slot, execution)
        time.sleep(POLL_S)
        for job in [j for j in running if j.done()]:
            slot, execution = running.pop(job)
            free.append(slot)
            finished[execution] = read_state(execution).get("state") == "finished"
            if not quiet:
                print(
                    f"{'ok' if finished[execution] else 'FAILED'} {execution.notebook.name} {execution.varying}",
                    flush=True,
                )
                if not finished[execution]:
                    print(f"  {read_state(execution).get('error', '')} Log: {job.paths.stdout}", flush=True)
    return finished


def submit_slurm(executions: list[Execution], options: SlurmOptions) -> list[submitit.Job]:
    """Submit executions as one Slurm job array (logs in `<folder>/slurm/`); returns without waiting."""
    if not executions:
        return []
    options.check()
    folder = executions[0].folder / "slurm"
    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(
        partition=options.partition,
        gpus_per_node=options.gpus_per_job,
        cpus_per_task=options.cpus_per_job,
        time=options.time_min,
        array_parallelism=options.array_parallelism,
        ntasks_per_node=1,
        additional_parameters=dict(options.sbatch, requeue=True),
        job_name="dwlt-" + executions[0].notebook.stem,
    )
    for execution in executions:
        submitting(execution, "slurm", options.gpus_per_job)
    jobs = executor.map_array(Execute(options.cpus_per_job), executions)
    for execution, job in zip(executions, jobs):
        if read_state(execution).get("state") == "submitted":  # queued: say where its log will be
            write_state(execution, "submitted", job_id=job.job_id, log=str(job.paths.stdout))
    return jobs


def parse_grid(items: list[str], say=note) -> dict[str, list]:
    """The `--grid NAME=V1,V2,...` arguments as a grid; a parameter given twice is refused, a value listed
    twice counts once (and `say` is told)."""
    grid = {}
    for item in items:
        name, _, values = item.partition("=")
        if not name or not values:
            raise InputError(f"--grid takes NAME=V1,V2,...; got {item!r}.")
        if name in grid:
            raise InputError(f"--grid gives {name} twice; give all its values at once, e.g. --grid {name}=V1,V2.")
        grid[name] = once(f"--grid {name}", [parse_value(v) for v in values.split(",")], say)
    return grid


def once(what: str, values: list, say=note) -> list:
    """`values` with each listed once, in order: a value listed twice would be executed and counted twice.
    `say` is told which were merged."""
    counts = Counter(map(repr, values))
    repeated = [text for text, count in counts.items() if count > 1]
    if repeated:
        say(f"{what} lists {', '.join(repeated)} more than once; each value counts once.")
    return list({repr(value): value for value in values}.values())


def parse_value(text: str):
    """A command-line value as papermill's -p reads it: a Python literal when it is one, else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
