"""The job of one execution, kept light: a job process imports this module (and papermill), not torch.

An execution is a notebook executed with one set of parameters (in a sweep, a search or the demo); its
executed notebook and its state record (`<name>.json`) are named after the parameters that vary. The state
record says what its job did last: submitted, started (with the host, process and log), finished, failed
(with the error's sentence) or requeued.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import submitit

from . import io
from .errors import FileFormatError, said
from .paths import slug


@dataclass(frozen=True)
class Execution:
    """A notebook executed with one set of parameters: the notebook, all its parameters, where its files go."""

    notebook: Path
    parameters: dict = field(hash=False)
    varying: dict = field(hash=False)
    folder: Path  # <run_root>/executed/<notebook name>

    @property
    def name(self) -> str:
        return slug(self.varying)

    @property
    def output(self) -> Path:
        return self.folder / f"{self.name}.ipynb"

    @property
    def state_file(self) -> Path:
        return self.folder / f"{self.name}.json"


def read_state(execution: Execution) -> dict:
    try:
        return io.read_json(execution.state_file) if execution.state_file.is_file() else {}
    except FileFormatError:
        return {}  # a state record cut short by a kill says nothing


class Execute(submitit.helpers.Checkpointable):
    """The job of one execution: run its notebook with papermill, keeping its state record up to date. When
    Slurm preempts the job or its time runs out, submitit calls `checkpoint` and requeues it; the notebook
    then resumes its runs from their last finished epoch."""

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def __call__(self, execution: Execution) -> str:
        import papermill as pm

        env = submitit.JobEnvironment()
        started = time.time()
        where = dict(pid=os.getpid(), host=socket.gethostname(), job_id=env.job_id, log=str(env.paths.stdout))
        write_state(execution, "started", started_at=started, **where)
        if self.threads:
            os.environ["DWLT_THREADS"] = str(self.threads)
        try:
            pm.execute_notebook(
                str(execution.notebook),
                str(execution.output),
                parameters=execution.parameters,
                progress_bar=False,
                log_output=True,
            )
        except pm.PapermillExecutionError as err:
            first = f"{err.ename}: {err.evalue}".strip().splitlines()[0]
            write_state(execution, "failed", started_at=started, ended_at=time.time(), error=first)
            raise
        except BaseException as err:  # anything else that ends the job: say what, then let it end
            why = ended_because(err, execution, where["log"])
            write_state(execution, "failed", started_at=started, ended_at=time.time(), error=why)
            raise
        write_state(execution, "finished", started_at=started, ended_at=time.time())
        return str(execution.output)

    def checkpoint(self, execution: Execution) -> submitit.helpers.DelayedSubmission:
        write_state(execution, "requeued", ended_at=time.time())
        return super().checkpoint(execution)


def ended_because(err: BaseException, execution: Execution, log: str) -> str:
    """The sentence a job's state record keeps for what ended its notebook outside the notebook's own cells."""
    from nbclient.exceptions import DeadKernelError

    if isinstance(err, DeadKernelError):  # papermill says only "Kernel died"
        return (
            f"The kernel running {execution.notebook.name} died, killed by the system, most often for want of memory "
            f"(the out-of-memory killer); its executed notebook {execution.output} and the job's log {log} show "
            "how far it got; run fewer jobs at once (--jobs) or give each more memory, then run it again: it "
            "resumes from its last finished epoch."
        )
    return said(err)


def submitting(execution: Execution, executor: str, gpus: float) -> None:
    """A new submission starts a new record, before its job can start: nothing of an earlier job (its error,
    its process) carries over. The job adds where it runs and logs when it starts. `gpus`: what its job holds,
    a fraction where it shares one."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    io.write_json(execution.state_file, {"state": "submitted", "executor": executor, "gpus": gpus, "at": now})


def write_state(execution: Execution, state: str, **fields: Any) -> None:
    previous = read_state(execution)
    record = {**previous, **fields, "state": state, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if state != "failed":
        record.pop("error", None)
    io.write_json(execution.state_file, record)
