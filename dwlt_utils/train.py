"""One training loop for standard transfer, adversarial transfer and IMP levels.

`fit` trains a `normalize → backbone` model epoch by epoch with SGD, optionally on adversarial examples,
keeps pruned weights at zero, validates, keeps the checkpoints chosen on validation (best SA, best RA),
and writes after every epoch, atomically, a resume state: a run killed at any point restarts from its last
finished epoch and ends exactly as the uninterrupted run would (every random draw of an epoch comes from a
generator seeded by (seed, epoch)). A finished run is not recomputed.

It writes into its run directory (names in `paths`): the resume state (model, optimiser, history, best so
far), the selected weights (best SA, best RA) and the per-epoch metrics, which `read_metrics` returns.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import io, paths
from .attacks import PGD3_IMP, PGD10_TRAIN, PGD20_EVAL, AttackSpec
from .batches import Batches
from .distributed import SINGLE, Ranks, local, wrap
from .engine import Precision, generator_for
from .errors import FileFormatError, InputError, check_choice
from .evaluate import evaluate
from .models import backbone_of
from .pruning import Mask, MaskedWeights

with warnings.catch_warnings():
    # Without ipywidgets (papermill, CI) tqdm.auto falls back to plain text lines, which is what we want there.
    warnings.filterwarnings("ignore", message="IProgress not found")
    from tqdm.auto import tqdm

SELECTIONS = {"best_sa": "SA", "best_ra": "RA"}  # checkpoint selection → validation metric it maximises
SCHEDULES = ("multistep", "cosine", "constant")
# What a run shows while it trains: a live bar belongs in JupyterLab; a headless run (papermill, CI) writes
# one line when it finishes, so that rendered notebooks are not walls of progress lines.
PROGRESS = {"bar": "a live progress bar", "phases": "one line when the run finishes", "off": "nothing"}


@dataclass(frozen=True)
class TrainConfig:
    """SGD with momentum, a per-epoch learning-rate schedule, optional adversarial examples."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    momentum: float = 0.9
    schedule: str = "multistep"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    attack: AttackSpec | None = None  # trains on these examples only; None = clean training
    val_attack: AttackSpec | None = None  # RA on the validation split; None = SA only
    val_from_epoch: int = 0  # first validated epoch (0-based); -1 = never validate
    keep: tuple[str, ...] = ("best_sa",)  # checkpoints selected on validation

    def __post_init__(self) -> None:
        check_choice("schedule", self.schedule, SCHEDULES)
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError(f"epochs and batch_size must be ≥ 1; got {self.epochs} and {self.batch_size}.")
        unknown = [k for k in self.keep if k not in SELECTIONS]
        if unknown:
            raise InputError(f"Unknown checkpoint selection {unknown}; accepted: {', '.join(SELECTIONS)}.")
        if "best_ra" in self.keep and self.val_attack is None:
            raise InputError("Selecting the best-RA checkpoint needs a validation attack (val_attack).")
        if self.keep and self.val_from_epoch < 0:
            raise InputError("Selecting checkpoints on validation needs validation (val_from_epoch ≥ 0).")

    def lr_at(self, epoch: int) -> float:
        if self.schedule == "multistep":  # torch's MultiStepLR, stepped once per epoch
            return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.schedule == "cosine":  # torch's CosineAnnealingLR(T_max=epochs, eta_min=0), closed form
            return self.lr * (1 + math.cos(math.pi * epoch / self.epochs)) / 2
        return self.lr

    def validates(self, epoch: int) -> bool:
        return 0 <= self.val_from_epoch <= epoch

    def shortened(self, epochs: int) -> TrainConfig:
        """The same recipe over fewer epochs: milestones and the first validated epoch scale with it."""
        ratio = epochs / self.epochs
        milestones = tuple(sorted({max(1, round(m * ratio)) for m in self.milestones}))
        val_from = -1 if self.val_from_epoch < 0 else min(round(self.val_from_epoch * ratio), epochs - 1)
        return replace(self, epochs=epochs, milestones=milestones, val_from_epoch=val_from)


# The protocol's recipes (PROTOCOL.md §3-4).
STD_TRANSFER = TrainConfig(epochs=150, batch_size=64, lr=1e-3, weight_decay=5e-4, milestones=(50, 100))
ADV_TRANSFER_CIFAR = TrainConfig(
    epochs=100,
    batch_size=128,
    lr=0.1,
    weight_decay=5e-4,
    milestones=(50, 75),
    attack=PGD10_TRAIN,
    val_attack=PGD20_EVAL,
    val_from_epoch=45,
    keep=("best_sa", "best_ra"),
)
ADV_TRANSFER_SVHN = replace(ADV_TRANSFER_CIFAR, epochs=80, lr=0.01, schedule="cosine", milestones=(), val_from_epoch=0)
IMP_LEVEL_CLEAN = TrainConfig(
    epochs=30, batch_size=2048, lr=5e-4, weight_decay=1e-4, schedule="constant", val_from_epoch=-1, keep=()
)
IMP_LEVEL_ADV = replace(IMP_LEVEL_CLEAN, attack=PGD3_IMP)


@dataclass
class FitResult:
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    best: dict[str, dict] = field(default_factory=dict)  # selection → {"epoch", "SA", "RA"}
    resumed_from: int = 0

    def checkpoint_path(self, selection: str) -> Path:
        return paths.checkpoint_file(self.run_dir, selection)


def make_optimizer(model: nn.Module, config: TrainConfig, precision: Precision | None = None) -> torch.optim.SGD:
    # Weight decay on every parameter, BatchNorm and biases included, as the official code does. The fused
    # kernel makes one pass over each parameter (one launch for all of them on CUDA) and computes what torch's
    # default per-parameter loop computes, to rounding (tests/unit/test_train.py). A captured CUDA graph reads
    # the learning rate from a tensor on the device, which `set_lr` changes in place every epoch.
    lr = config.lr
    if precision is not None and precision.cuda_graphs:
        lr = torch.tensor(config.lr, device=precision.device)
    return torch.optim.SGD(
        model.parameters(), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay, fused=True
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The learning rate of every group: in place where it is a tensor, which a captured graph reads."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    attack: AttackSpec | None,
    masked: MaskedWeights | None,
    generator: torch.Generator,
    precision: Precision,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step (on adversarial examples only when there is an attack); returns (summed loss, correct)
    as device tensors, so that nothing waits for the device inside an epoch."""
    x = precision.input(x)
    if attack is not None:
        with precision.autocast():
            x = attack(local(model), x, y, generator)  # under DDP, each rank attacks its own shard alone
    model.train()
    with precision.autocast():
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if masked is not None:
        masked.apply_()
    return loss.detach() * len(y), (logits.argmax(1) == y).sum()


class GraphedStep:
    """`train_step` on full batches replayed as one CUDA graph: the attack's k forwards and backwards, the
    training forward and backward, the optimiser step and the mask, each a kernel launch the host no longer
    makes. The first `WARMUP` batches train eagerly on a side stream (cuDNN picks its kernels, the optimiser
    makes its momentum buffers), the next one is captured, and every full batch after it copies its images
    into the captured inputs and replays. The attack draws from a generator of the graph's own, seeded every
    epoch (`seed`), so a resumed run replays the same draws. A batch of another size trains eagerly."""

    WARMUP = 3

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        attack: AttackSpec | None,
        masked: MaskedWeights | None,
        precision: Precision,
    ):
        self.model, self.optimizer, self.precision = model, optimizer, precision
        self.attack, self.masked = attack, masked
        self.generator = torch.Generator(precision.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warmed = 0

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return train_step(
            self.model,
            x,
            y,
            self.optimizer,
            attack=self.attack,
            masked=self.masked,
            generator=self.generator,
            precision=self.precision,
        )

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.graph is not None and x.shape != self.x.shape:  # a graph replays the shapes it captured
            return self._step(x, y)
        if self.graph is None and self.warmed < self.WARMUP:
            self.warmed += 1
            side = torch.cuda.Stream(self.precision.device)
            side.wait_stream(torch.cuda.current_stream(self.precision.device))
            with torch.cuda.stream(side):
                out = self._step(x, y)
            torch.cuda.current_stream(self.precision.device).wait_stream(side)
            return out
        if self.graph is None:
            self.x, self.y = x.clone(), y.clone()
            self.graph = torch.cuda.CUDAGraph()
            self.graph.register_generator_state(self.generator)
            with torch.cuda.graph(self.graph):
                self.out = self._step(self.x, self.y)
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.out


def train_epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    *,
    masked: MaskedWeights | None,
    generator: torch.Generator,
    precision: Precision,
    ranks: Ranks = SINGLE,
    graphed: GraphedStep | None = None,
) -> dict[str, float]:
    """One epoch; on several ranks, this rank's shards, its own attack stream, and its own loss and accuracy.
    With `graphed`, its full batches are replayed as a CUDA graph."""
    loss_sum = torch.zeros((), device=precision.device)
    correct = torch.zeros((), dtype=torch.long, device=precision.device)
    seen = 0
    batches_of_rank = batches.train(config.batch_size, generator, ranks=ranks)
    attack_stream = (
        generator_for(precision.device, generator.initial_seed(), 1 + ranks.rank) if ranks.world > 1 else generator
    )
    if graphed is not None:
        graphed.seed(generator.initial_seed() + 1)
    full = ranks.batch_size(config.batch_size)
    for x, y in batches_of_rank:
        if len(y) < 2:  # BatchNorm cannot train on a batch of one; only a last, partial batch can be that small
            continue
        if graphed is not None and len(y) == full:
            step_loss, step_correct = graphed(x, y)
        else:
            step_loss, step_correct = train_step(
                model,
                x,
                y,
                optimizer,
                attack=config.attack,
                masked=masked,
                generator=attack_stream,
                precision=precision,
            )
        loss_sum += step_loss
        correct += step_correct
        seen += len(y)
    if seen == 0:
        raise InputError(
            f"An epoch of {len(batches)} training image(s) in batches of {config.batch_size} formed no batch of at "
            "least two images (BatchNorm needs two), so nothing would train; give the run at least two images."
        )
    return {"train_loss": loss_sum.item() / seen, "train_acc": 100.0 * correct.item() / seen}


def _save_resume(run_dir: Path, model: nn.Module, optimizer, history: list[dict], best: dict) -> None:
    io.save_torch(
        paths.resume_file(run_dir),
        {
            "epoch": len(history),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "best": best,
        },
    )
    header = sorted({k for row in history for k in row}, key=lambda k: (k != "epoch", k))
    lines = [",".join(header)] + [",".join(str(row.get(k, "")) for k in header) for row in history]
    io.write_text(paths.metrics_file(run_dir), "\n".join(lines) + "\n")


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """The per-epoch log of a run: epoch, lr, train_loss, train_acc, val_SA and val_RA where validated, wall_s."""
    path = paths.metrics_file(run_dir)
    if not path.is_file():
        raise InputError(f"{run_dir} has no training log ({path.name}); it has not finished an epoch yet.")
    try:
        log = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as err:  # pandas' parser errors are ValueErrors
        raise FileFormatError(f"{path} is not a readable training log ({err}); {io.RERUN}.") from None
    if "epoch" not in log.columns:
        raise FileFormatError(f"{path} is not a training log (it has no epoch column); {io.RERUN}.")
    return log


def _finished_line(label: str, history: list[dict], first: int, epochs: int) -> str:
    """One line for a run that trained epochs first+1..len(history) of `epochs`."""
    last = history[-1]
    wall = sum(row["wall_s"] for row in history[first:])
    scores = [f"train loss {last['train_loss']:.3f}", f"train acc {last['train_acc']:.1f}%"]
    scores += [f"val {k[4:]} {v:.1f}%" for k, v in last.items() if k.startswith("val_")]
    span = f"epoch {first + 1}" if first + 1 == len(history) else f"epochs {first + 1}-{len(history)}"
    return f"{label}: {span} of {epochs} in {wall:.0f} s; last epoch {', '.join(scores)}"


def fit(
    model: nn.Module,
    train_batches: Batches,
    val_batches: Batches | None,
    config: TrainConfig,
    run_dir: Path,
    *,
    seed: int,
    mask: Mask | None = None,
    precision: Precision | None = None,
    progress: str = "off",
    label: str | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
    ranks: Ranks = SINGLE,
    epoch_offset: int = 0,
) -> FitResult:
    """Train `model` in place per `config`; resumable and idempotent through `run_dir`.

    On return the model holds the weights of the last epoch; `FitResult.best` says which epochs the kept
    checkpoints come from. `on_epoch_end` sees each new epoch's metrics after they are saved. `progress` is
    one of PROGRESS; `label` names the run in it (default: the run directory's name). On several `ranks`
    (`distributed`), every rank resumes from the same state and trains its shards under DDP; rank 0 alone
    writes and shows progress, and its loss and accuracy are the ones logged. Epoch e draws its data order,
    crops and attack starts as epoch `epoch_offset` + e (an IMP level's place in its ladder's epochs).
    """
    check_choice("progress", progress, PROGRESS)
    if (config.keep or config.val_from_epoch >= 0) and val_batches is None:
        raise InputError("This recipe validates, but no validation data was given.")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    precision = precision or Precision.for_device(next(model.parameters()).device)
    precision.prepare(model)
    net = wrap(precision.compiled(model), ranks, precision.device)
    backbone = backbone_of(model)
    masked = mask.bind(backbone) if mask is not None else None
    if masked is not None:
        masked.apply_()
    optimizer = make_optimizer(model, config, precision)
    if precision.cuda_graphs and ranks.world > 1:
        raise InputError("CUDA graphs capture a step of one process; under DDP leave them off.")

    history: list[dict] = []
    best: dict[str, dict] = {}
    resume_path = paths.resume_file(run_dir)
    if resume_path.is_file():
        state = io.load_torch(
            resume_path, map_location=precision.device, remedy="delete it to train this run again from its first epoch"
        )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if precision.cuda_graphs:  # a state saved by an eager run holds its learning rate as a number
            for group in optimizer.param_groups:
                group["lr"] = torch.as_tensor(group["lr"], dtype=torch.float32, device=precision.device)
        history, best = state["history"], state["best"]
    result = FitResult(run_dir, history, best, resumed_from=len(history))
    graphed = (
        GraphedStep(net, optimizer, attack=config.attack, masked=masked, precision=precision)
        if precision.cuda_graphs
        else None
    )

    label = label or run_dir.name
    epochs = range(len(history), config.epochs)
    shown = progress if ranks.main else "off"
    bar = tqdm(epochs, desc=label, disable=shown != "bar", initial=len(history), total=config.epochs)
    for epoch in bar:
        started = time.perf_counter()
        set_lr(optimizer, config.lr_at(epoch))
        generator = generator_for(precision.device, seed, epoch_offset + epoch)
        row = {"epoch": epoch, "lr": config.lr_at(epoch)}
        row.update(
            train_epoch(
                net,
                train_batches,
                optimizer,
                config,
                masked=masked,
                generator=generator,
                precision=precision,
                ranks=ranks,
                graphed=graphed,
            )
        )
        if config.validates(epoch):
            net.eval()
            val = evaluate(local(net), val_batches, attack=config.val_attack, precision=precision)
            row.update({f"val_{k}": v for k, v in val.items()})
            for selection in config.keep:
                metric = SELECTIONS[selection]
                # Strictly better only: ties keep the earlier epoch, as the official code's `>` does.
                if selection not in best or val[metric] > best[selection][metric]:
                    best[selection] = {"epoch": epoch, **val}
                    if ranks.main:
                        io.save_torch(
                            result.checkpoint_path(selection),
                            {"epoch": epoch, "metrics": val, "model": model.state_dict()},
                        )
        row["wall_s"] = time.perf_counter() - started
        history.append(row)
        if ranks.main:
            _save_resume(run_dir, model, optimizer, history, best)
        bar.set_postfix({k: round(v, 2) for k, v in row.items() if k.startswith(("train_", "val_"))})
        if on_epoch_end is not None:
            on_epoch_end(row)
    if shown == "phases" and len(history) > result.resumed_from:
        print(_finished_line(label, history, result.resumed_from, config.epochs), flush=True)
    return result


def load_selected(model: nn.Module, result: FitResult, selection: str) -> dict:
    """Load the weights kept for `selection` into `model`; returns that checkpoint's validation metrics."""
    path = result.checkpoint_path(selection)
    if not path.is_file():
        raise InputError(f"The run in {result.run_dir} kept no {selection!r} checkpoint.")
    state = io.load_torch(
        path,
        map_location=next(model.parameters()).device,
        remedy=f"delete the run directory {result.run_dir} and run it again",
    )
    model.load_state_dict(state["model"])
    return {"epoch": state["epoch"], **state["metrics"]}
