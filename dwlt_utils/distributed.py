"""Training on several processes as the official IMP does: DistributedDataParallel, one process per GPU (NCCL)
or per CPU share (gloo, so that the whole path runs and is tested without a GPU).

A run on N processes splits every global batch of B images into N shards of B / N, so BatchNorm computes its
batch statistics over B / N images, and DDP averages the gradients, so the step is the global batch's (what
`--multiprocessing-distributed` computes). The shards follow a DistributedSampler's rule: one permutation of
the training set drawn from the run's seeded generator, identical on every rank, rank r taking every N-th
image from position r. Rank 0 alone writes; every rank reads the same resume state.

`launch` starts one such run with torchrun and turns a failing rank into one sentence that names it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from . import io, paths
from .errors import DwltError, InputError, check_number


@dataclass(frozen=True)
class Ranks:
    """This process's place in a run: its rank among `world` processes, and its rank on its node."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes (rank 0)."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Ranks:
        """The ranks torchrun gives a worker in its environment."""
        return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's share of a permutation: every `world`-th position from `rank`, all shares one length
        (the tail that does not divide is dropped, as DistributedSampler(drop_last=True) does)."""
        return order[self.rank :: self.world][: len(order) // self.world]

    def batch_size(self, global_batch: int) -> int:
        if global_batch % self.world:
            raise InputError(
                f"A batch of {global_batch} does not split into {self.world} equal shares; choose a number of "
                f"processes that divides it."
            )
        return global_batch // self.world


SINGLE = Ranks()


def init(device_type: str) -> Ranks:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on the CPU)."""
    ranks = Ranks.from_env()
    if device_type == "cuda":
        torch.cuda.set_device(ranks.local)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return ranks


def wrap(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """The model DDP trains (gradients averaged over the ranks; buffers broadcast from rank 0 at each forward,
    DDP's default); the model itself on one process."""
    if ranks.world == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def local(model: nn.Module) -> nn.Module:
    """The model without its DDP wrapper: the attack's forwards and backwards are this rank's alone."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def agree(value: str, ranks: Ranks, what: str) -> None:
    """Stop unless every rank holds the same `value` (a digest of what they must share)."""
    if ranks.world == 1:
        return
    values: list[str] = [""] * ranks.world
    dist.all_gather_object(values, value)
    differing = [r for r, v in enumerate(values) if v != values[0]]
    if differing:
        raise DwltError(f"The ranks disagree on {what}: ranks {differing} differ from rank 0.")


def barrier(ranks: Ranks) -> None:
    """Wait until every rank is here (rank 0's files are written before any rank goes on)."""
    if ranks.world > 1:
        dist.barrier()


# ---- torchrun


@dataclass(frozen=True)
class Launch:
    """Where the processes of a run start: `nproc_per_node` on each of `nnodes` nodes; several nodes meet at
    `rdzv_endpoint` (host:port of one of them) under `rdzv_id`, and each is started with its `node_rank`."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str = ""
    rdzv_id: str = "dwlt"

    def __post_init__(self) -> None:
        check_number("nproc_per_node", self.nproc_per_node, 1, 1024, integer=True)
        check_number("nnodes", self.nnodes, 1, 100_000, integer=True)
        check_number("node_rank", self.node_rank, 0, self.nnodes - 1, integer=True)
        if self.nnodes > 1 and not re.fullmatch(r"[^\s:]+:\d+", self.rdzv_endpoint):
            raise InputError(
                f"Several nodes meet at rdzv_endpoint HOST:PORT (one node's address and a free port); got "
                f"{self.rdzv_endpoint!r}."
            )

    @property
    def world(self) -> int:
        return self.nproc_per_node * self.nnodes

    def command(self, module: str, arguments: Sequence[str]) -> list[str]:
        where = (
            ["--standalone"]
            if self.nnodes == 1
            else [
                f"--nnodes={self.nnodes}",
                f"--node_rank={self.node_rank}",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint={self.rdzv_endpoint}",
                f"--rdzv_id={self.rdzv_id}",
            ]
        )
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            *where,
            f"--nproc_per_node={self.nproc_per_node}",
            "--max_restarts=0",
            "-m",
            module,
            *arguments,
        ]


def write_error(folder: Path, ranks: Ranks, err: BaseException) -> None:
    """What stopped this rank, in one sentence, for `launch` to report."""
    lines = f"{type(err).__name__}: {err}".strip().splitlines()
    io.write_text(paths.rank_error_file(folder, ranks.rank), lines[0] + "\n")


def run_torchrun(launch: Launch, module: str, arguments: Sequence[str], *, folder: Path, what: str) -> None:
    """Run `module` on every process of `launch` through torchrun, showing its output as it comes; a failing
    rank raises one sentence naming the rank and the cause (its own sentence, or the signal that killed it).
    Ranks write their sentences to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for _, stale in paths.rank_error_files(folder):
        stale.unlink()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    process = subprocess.Popen(
        launch.command(module, arguments), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    tail: list[str] = []
    for line in process.stdout:
        print(line, end="", flush=True)
        tail = [*tail[-200:], line]
    if process.wait() == 0:
        return
    raise DwltError(f"{what} failed: {_cause(folder, ''.join(tail), process.returncode)}.")


def _cause(folder: Path, output: str, returncode: int) -> str:
    """The rank that failed first and why: its own sentence, or how it ended. torchrun names that rank under
    "Root Cause" ("rank : 1 (local_rank: 1)", then "exitcode : -9 (pid: ...)"); the ranks that failed because
    of it (a lost connection) come under "Failures" and may have written sentences of their own."""
    written = dict(paths.rank_error_files(folder))
    root = output[output.rfind("Root Cause") :] if "Root Cause" in output else ""
    found = re.search(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", root, re.S)
    if found:
        rank, code = int(found.group(1)), int(found.group(2))
        if rank in written:
            return f"rank {rank} stopped with {written[rank].read_text().strip().rstrip('.')}"
        return f"rank {rank} " + (f"was killed by signal {-code}" if code < 0 else f"exited with status {code}")
    if written:
        rank, path = next(iter(written.items()))
        return f"rank {rank} stopped with {path.read_text().strip().rstrip('.')}"
    return f"torchrun exited with status {returncode} before any rank reported (see its output above)"
