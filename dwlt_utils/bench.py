"""Images per second of the training engine against a loop written the way the official code works.

    python -m dwlt_utils.bench [--device auto|cpu|cuda] [--quick] [--compile | --cuda-graphs] [--json PATH]
                               [--imagenet-input N [--input-only]] [--processes K | --profile]

The reference loop is the official one's shape: fp32, per-sample PIL transforms in a DataLoader with
worker processes, PGD whose every step also computes (and later discards) the parameters' gradients, and
`.item()` after every step. The engine: uint8 data resident on the device, augmentation batched there,
bf16 autocast and channels_last on CUDA, attack steps that ask for the input gradient only, no host
synchronisation inside an epoch, optional `torch.compile` or CUDA graphs. Both run the same model, data, batch
size and number of steps, alternating round by round after a warm-up that is not timed; the figures are images
per second and their ratio, for PGD-10 adversarial training steps, clean training steps and PGD-20 evaluation,
at 224 px (ResNet-50) and 32 px (its 32 px variant). Each figure also gives the FLOPs per image of what it
times (torch's FlopCounterMode on one engine step), the TFLOP/s both sides reach with them, and on CUDA their
share of the chip's bf16 peak (measured in the same run) and, at 224 px, of the MLPerf anchor below.

`--imagenet-input N` adds the ImageNet input path of IMP: training batches per second from N generated
ImageNet-sized JPEGs through each of the device decoders of `batches.jpeg_folder_batches` ("nvimgcodec" where
nvImageCodec is installed, "turbo", "mixed", "nvjpeg") against PIL per image in DataLoader workers ("pil", the
official way).

`--processes K` times every figure in K processes at once on the one device (`compare_shared`): what K small
runs sharing a GPU reach together (`cli sweep --per-gpu K`).

`--profile` runs a few more steps of each engine figure under torch's profiler (`work_profile`): on CUDA the share
of the wall time the device was busy and the costliest kernels, which say whether the host or the kernels bound
a figure and which kernels to make faster.

`--json PATH` rewrites the whole file after every figure, so a bench stopped by a time limit leaves every
figure it finished.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import platform
import queue as queue_module
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from . import __version__, io, nvimgcodec_jpeg
from .attacks import PGD10_TRAIN, PGD20_EVAL, AttackSpec
from .augment import PAPER_32, PAPER_224
from .batches import ArrayBatches, Batches, JpegBatches, collate_files, jpeg_folder_batches, loader_workers
from .data import DATASETS, ImageArrays, imagenet_folder, pil_transforms
from .engine import Precision, generator_for, resolve_device
from .errors import DwltError, InputError, check_number
from .evaluate import evaluate
from .models import build_model
from .train import GraphedStep, TrainConfig, make_optimizer, train_step

FIGURES = ("adv_train", "clean_train", "pgd20_eval")
CLEAN_224 = ("clean_train", 224)  # the figure whose FLOPs scale the anchor of the others
ATTACKS = {"adv_train": PGD10_TRAIN, "clean_train": None, "pgd20_eval": PGD20_EVAL}
PIPELINES = {224: ("resnet50", PAPER_224), 32: ("resnet50_32px", PAPER_32)}
CIFAR = DATASETS["cifar10"]
# The decoders timed against "pil", the reference, on the ImageNet input path: the one never timed on a GPU first,
# nvJPEG (timed on 2026-11-30) last, so that a bench stopped by a time limit loses the figure known already.
INPUT_DECODERS = ("nvimgcodec", "turbo", "mixed", "nvjpeg")
POLL_S = 5  # how often the parent of processes timing at once looks whether they are still alive
BARRIER_TIMEOUT_S = 900  # a process that waits longer for the others to start a round stops, said so

# The anchor of the 224 px figures: MLPerf Training v4.0, ResNet-50 on 8x H200 reaches about 7,950 images/s
# per GPU for clean training (DALI decoding on the hardware JPEG engine; DESIGN.md section 5). Another figure's
# anchor is that rate scaled by its FLOPs per image (the same chip doing that work as efficiently); the input
# path's is the clean rate it has to feed. 32 px has none.
ANCHOR_CLEAN_IMG_S = 7_950
ANCHOR = (
    "MLPerf Training v4.0, ResNet-50 on 8x H200: about 7,950 img/s per GPU for clean training "
    "(scaled by FLOPs per image for the attacked figures)"
)


# --- the reference: how the official scripts do it -----------------------------------------------------
class PilImages(Dataset):
    """uint8 CHW images served one by one as PIL images through a transform, as torchvision's CIFAR10 does."""

    def __init__(self, arrays: ImageArrays, transform):
        self.images = arrays.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = arrays.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def reference_pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackSpec, generator: torch.Generator
) -> torch.Tensor:
    """advertorch's LinfPGDAttack.perturb as the official code calls it: mean cross-entropy, `backward()`
    through the model, so the parameters' gradients are computed too (the caller zeroes them later)."""
    delta = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * (2 * attack.eps) - attack.eps
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    for _ in range(attack.steps):
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()
        with torch.no_grad():
            delta += attack.alpha * delta.grad.sign()
            delta.clamp_(-attack.eps, attack.eps)
            delta.copy_((x + delta).clamp(0, 1) - x)
        delta.grad.zero_()
    return (x + delta).detach()


def reference_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: AttackSpec | None,
    generator: torch.Generator,
) -> float:
    """One step of the official training loop (main_adv_eval.py's train): train mode throughout, the attack
    included, loss on the adversarial images only, `.item()` for the running average."""
    model.train()
    if attack is not None:
        x = reference_pgd(model, x, y, attack, generator)
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def reference_eval_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackSpec, generator: torch.Generator
) -> tuple[int, int]:
    """One batch of the official validate + validate_adv: clean and PGD accuracy, synchronised by `.item()`."""
    model.eval()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).sum().item()
    x_adv = reference_pgd(model, x, y, attack, generator)
    model.zero_grad()
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y).sum().item()
    return clean, robust


# --- one figure --------------------------------------------------------------------------------------------
@dataclass
class Figure:
    name: str
    px: int
    device: str
    batch: int
    ours_img_s: float
    reference_img_s: float
    ratio: float
    arch: str
    steps_timed: int
    ours: str
    reference: str
    # What the figure does with the device: None where it is not known (no model, or no CUDA device).
    gflop_per_img: float | None = None
    tflop_s: float | None = None
    reference_tflop_s: float | None = None
    peak_fraction: float | None = None
    anchor_img_s: float | None = None
    anchor_fraction: float | None = None
    anchor: str | None = None
    decoder: str | None = None  # the ImageNet input figures' decoder
    # Where the engine's time goes (`bench --profile`, `work_profile`): the device's share of the profiled steps'
    # wall time spent in kernels (CUDA only), the costliest kernels (CPU: operators), or why there is no profile.
    device_busy: float | None = None
    top_work: list[dict] | None = None
    profile_note: str | None = None
    # Where an input figure's time goes, each part timed alone (`input_stages`): a loader worker's milliseconds per
    # image, the rate the workers could supply at that, the rate the main process could take their batches at.
    worker_ms_per_img: float | None = None
    workers_img_s: float | None = None
    main_process_img_s: float | None = None
    processes: int = 1  # timing at once on one device, each side's rate the sum of theirs (`compare_shared`)


class Loop:
    """One side of a comparison: `run(steps)` does `steps` batches of one figure and returns their images."""

    def __init__(
        self,
        name: str,
        px: int,
        arrays: ImageArrays,
        batch: int,
        precision: Precision,
        model: nn.Module,
        *,
        reference: bool,
        workers: int,
    ):
        self.name, self.batch, self.precision, self.reference = name, batch, precision, reference
        self.model = model
        self.attack = ATTACKS[name]
        recipe = TrainConfig(epochs=1, batch_size=batch, lr=0.01, weight_decay=5e-4)
        self.optimizer = (
            torch.optim.SGD(
                model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
            )
            if reference
            else make_optimizer(model, recipe, precision)
        )
        self.generator = generator_for(precision.device, 0)
        train = name != "pgd20_eval"
        if reference:
            loader = DataLoader(
                PilImages(arrays, pil_transforms(px, train)),
                batch_size=batch,
                shuffle=train,
                num_workers=workers,
                drop_last=True,
                persistent_workers=workers > 0,
                pin_memory=precision.device.type == "cuda",
            )
            self.batches = lambda: (
                (x.to(precision.device, non_blocking=True), y.to(precision.device, non_blocking=True))
                for x, y in loader
            )
        else:
            self.data = ArrayBatches(arrays, PIPELINES[px][1], precision.device)
            self.net = precision.compiled(model)
            self.batches = lambda: self.data.train(batch, self.generator, drop_last=True)
        self.graphed = (
            GraphedStep(self.net, self.optimizer, attack=self.attack, masked=None, precision=precision)
            if precision.cuda_graphs and name != "pgd20_eval"
            else None
        )
        self.stream = iter(())

    def _next(self):
        try:
            return next(self.stream)
        except StopIteration:
            self.stream = iter(self.batches())
            return next(self.stream)

    def run(self, steps: int) -> int:
        if not self.reference and self.name == "pgd20_eval":  # the engine evaluates a split in one call
            arrays = self.data.arrays.take(torch.arange(steps * self.batch, device=self.precision.device))
            self.net.eval()
            evaluate(
                self.net,
                ArrayBatches(arrays, self.data.transforms, self.precision.device),
                attack=self.attack,
                batch_size=self.batch,
                precision=self.precision,
            )
            return steps * self.batch
        for _ in range(steps):
            x, y = self._next()
            if self.name == "pgd20_eval":
                reference_eval_step(self.model, x, y, self.attack, self.generator)
            elif self.reference:
                reference_train_step(self.model, self.optimizer, x, y, self.attack, self.generator)
            elif self.graphed is not None:
                self.graphed(x, y)
            else:
                train_step(
                    self.net,
                    x,
                    y,
                    self.optimizer,
                    attack=self.attack,
                    masked=None,
                    generator=self.generator,
                    precision=self.precision,
                )
        return steps * self.batch


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


SIDES = ("ours", "reference")
Rounds = dict[str, list[tuple[float, int]]]  # each side's timed rounds: (seconds, images)


def _loops(name: str, px: int, precision: Precision, batch: int, steps: int, workers: int, seed: int) -> dict:
    """The engine's loop and the reference's on the same model, data and batch."""
    generator = torch.Generator().manual_seed(seed)
    n = batch * steps * 2
    arrays = ImageArrays(
        torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8),
        torch.randint(0, CIFAR.num_classes, (n,), generator=generator),
        torch.arange(n),
    )
    torch.manual_seed(seed)
    model = build_model(PIPELINES[px][0], CIFAR.num_classes, CIFAR.mean, CIFAR.std)
    reference_model = copy.deepcopy(model).to(precision.device)
    fp32 = Precision(precision.device, bf16=False, channels_last=False)
    return {
        "ours": Loop(name, px, arrays, batch, precision, precision.prepare(model), reference=False, workers=workers),
        "reference": Loop(name, px, arrays, batch, fp32, reference_model, reference=True, workers=workers),
    }


def timed_rounds(loops: dict[str, Loop], *, steps: int, rounds: int, warmup: int, barrier=None) -> Rounds:
    """Each side's rounds of `steps` batches, alternating after `warmup` untimed steps; with a `barrier` (shared by
    processes timing at once), every round starts when every process is ready for it."""
    ours, device = loops["ours"], loops["ours"].precision.device
    # A CUDA graph is captured after GraphedStep.WARMUP eager steps: its capture and first replay stay untimed.
    ours.run(max(warmup, GraphedStep.WARMUP + 2) if ours.graphed else warmup)
    loops["reference"].run(warmup)
    _synchronize(device)
    timed: Rounds = {side: [] for side in SIDES}
    for round_ in range(rounds):
        for side in SIDES if round_ % 2 == 0 else SIDES[::-1]:  # neither side always goes first
            if barrier is not None:
                barrier.wait()
            started = time.perf_counter()
            images = loops[side].run(steps)
            _synchronize(device)
            timed[side].append((time.perf_counter() - started, images))
    return timed


def _figure(
    name: str, px: int, precision: Precision, batch: int, workers: int, rates: dict, steps: int, processes: int = 1
) -> Figure:
    ours, reference = rates["ours"], rates["reference"]
    shared = f", {processes} processes at once" if processes > 1 else ""
    return Figure(
        name,
        px,
        precision.device.type,
        batch,
        round(ours, 3),
        round(reference, 3),
        round(ours / reference, 3),
        PIPELINES[px][0],
        steps,
        precision.describe() + shared,
        f"{precision.device.type}, fp32, PIL transforms in a DataLoader ({workers} workers), param-grad PGD, "
        f".item() per step{shared}",
        processes=processes,
    )


def compare(
    name: str, px: int, precision: Precision, *, workers: int, batch: int, steps: int, profile: bool = False, **timing
) -> Figure:
    """Time the engine and the reference on one figure (`timed_rounds`, its `timing`: rounds and warm-up), in
    images per second; with `profile`, also where the engine's time goes (`work_profile`)."""
    loops = _loops(name, px, precision, batch, steps, workers, seed=0)
    timed = timed_rounds(loops, steps=steps, **timing)
    rates = {side: sum(n for _, n in rounds) / sum(t for t, _ in rounds) for side, rounds in timed.items()}
    figure = _figure(name, px, precision, batch, workers, rates, steps * timing["rounds"])
    return replace(figure, **work_profile(loops["ours"], steps)) if profile else figure


Timing = tuple[str, int, dict]  # a figure's name, its image size, and its batch, steps, rounds and warm-up


def _shared_process(queue, barrier, threads: int, precision: Precision, timings: list[Timing], workers: int, seed: int):
    """One of the processes timing at once: every figure in turn, each answer put on the queue as (seed, figure's
    index, its rounds or the sentence of what failed)."""
    torch.set_num_threads(threads)
    for index, (name, px, sizes) in enumerate(timings):
        try:
            loops = _loops(name, px, precision, sizes["batch"], sizes["steps"], workers, seed)
            timed = timed_rounds(
                loops, steps=sizes["steps"], rounds=sizes["rounds"], warmup=sizes["warmup"], barrier=barrier
            )
        except BaseException as err:  # said to the parent, and the others stopped at their barrier
            barrier.abort()
            queue.put((seed, index, f"{type(err).__name__}: {err}"))
            return
        queue.put((seed, index, timed))


def _answer(queue, children: list, answered: list[int], figures: int) -> tuple[int, Rounds | str]:
    """The next answer of a child, as (figure's index, what it said); a child that ended before answering every
    figure is a failure, said so. `answered` counts each child's answers."""
    while True:
        try:
            seed, index, said = queue.get(timeout=POLL_S)
            answered[seed] += 1
            return index, said
        except queue_module.Empty:
            for seed, child in enumerate(children):
                if not child.is_alive() and queue.empty() and answered[seed] < figures:
                    return answered[seed], f"it ended with exit code {child.exitcode} and no answer"


def shared_rates(timed: list[Rounds]) -> dict[str, float]:
    """Each side's images per second of processes timed at once: the images of all of them over the time the
    slowest took, round by round."""
    rates = {}
    for side in SIDES:
        rounds = list(zip(*(each[side] for each in timed)))  # round by round, every process's (seconds, images)
        rates[side] = sum(n for row in rounds for _, n in row) / sum(max(t for t, _ in row) for row in rounds)
    return rates


def compare_shared(timings: list[Timing], precision: Precision, *, processes: int, workers: int) -> Iterator[Figure]:
    """Figures timed in `processes` processes at once on one device, as several runs sharing a GPU would train,
    each yielded as all have timed it. The processes start once; every round starts together in all of them,
    and a side's rate is the images of all of them over the time the slowest took, round by round
    (`shared_rates`). Each process has its share of the cores and the workers."""
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked process
    queue, barrier = context.Queue(), context.Barrier(processes, timeout=BARRIER_TIMEOUT_S)
    threads, share = max(1, torch.get_num_threads() // processes), workers // processes
    children = [
        context.Process(target=_shared_process, args=(queue, barrier, threads, precision, timings, share, seed))
        for seed in range(processes)
    ]
    for child in children:
        child.start()
    answered, waiting = [0] * processes, {index: [] for index in range(len(timings))}
    try:
        for index, (name, px, sizes) in enumerate(timings):
            while len(waiting[index]) < processes:
                at, said = _answer(queue, children, answered, len(timings))
                if isinstance(said, str):
                    raise DwltError(f"bench --processes {processes}: a process failed ({said}).")
                waiting[at].append(said)
            steps = sizes["steps"] * sizes["rounds"] * processes
            yield _figure(
                name, px, precision, sizes["batch"], share, shared_rates(waiting.pop(index)), steps, processes
            )
    finally:
        for child in children:
            child.terminate()
            child.join()


# ---- where the engine's time goes --------------------------------------------------------------------------
TOP_WORK = 8  # kernels (operators on a CPU) named in a profile
NAME_CHARS = 90


def work_profile(loop: Loop, steps: int) -> dict:
    """`steps` more batches of the engine under torch's profiler, after its timed rounds: on CUDA the share of their
    wall time the device spent in kernels (the rest it waited for the host: launches, syncs, input) and the
    costliest kernels; on a CPU the costliest operators. Each named with its share of the profiled work and its
    milliseconds per step. A profiler that records nothing of the device (some sandboxes deny it the counters)
    is said so, not guessed at."""
    device = loop.precision.device
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    _synchronize(device)
    try:
        with profile(activities=activities) as profiler:
            started = time.perf_counter()
            loop.run(steps)
            _synchronize(device)
            wall_us = (time.perf_counter() - started) * 1e6
        rows = profiler.key_averages()
    except RuntimeError as err:
        return {"profile_note": f"the profiler failed ({err})"}
    kind = DeviceType.CUDA if cuda else DeviceType.CPU
    mine = [row for row in rows if row.device_type == kind]
    spent = sorted(
        ((row.key, row.self_device_time_total if cuda else row.self_cpu_time_total) for row in mine),
        key=lambda r: -r[1],
    )
    total = sum(us for _, us in spent)
    if not total:
        return {"profile_note": "the profiler recorded no device work"}
    return {
        "device_busy": round(min(total / wall_us, 1.0), 4) if cuda else None,
        "top_work": [
            {"name": name[:NAME_CHARS], "share": round(us / total, 4), "ms_per_step": round(us / 1e3 / steps, 3)}
            for name, us in spent[:TOP_WORK]
        ],
    }


# ---- what a figure does with the device -------------------------------------------------------------------
FLOP_BATCH = 2  # FLOPs grow with the batch; two images keep BatchNorm's training statistics defined


class OneBatch:
    """One batch, read as `evaluate` reads its batches."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.batch = (x, y)

    def eval(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter([self.batch])


def gflop_per_image(name: str, px: int, precision: Precision) -> float:
    """GFLOPs per image of one engine step of a figure, counted by torch's FlopCounterMode on a batch of two on
    the figure's device: a training step with its attack, or for pgd20_eval the clean forward, the 20 attack
    steps and the adversarial forward. The model runs eager: compiled and CUDA graphs change when the work
    runs, not what it is."""
    eager = Precision(precision.device, precision.bf16, precision.channels_last)
    model = eager.prepare(build_model(PIPELINES[px][0], CIFAR.num_classes, CIFAR.mean, CIFAR.std))
    x = torch.rand(FLOP_BATCH, 3, px, px, device=eager.device)
    y = torch.randint(0, CIFAR.num_classes, (FLOP_BATCH,), device=eager.device)
    generator = generator_for(eager.device, 0)
    with FlopCounterMode(display=False) as counter:
        if name == "pgd20_eval":
            evaluate(model.eval(), OneBatch(x, y), attack=PGD20_EVAL, batch_size=FLOP_BATCH, precision=eager)
        else:
            optimizer = make_optimizer(model, TrainConfig(epochs=1, batch_size=FLOP_BATCH, lr=0.01, weight_decay=5e-4))
            train_step(model, x, y, optimizer, attack=ATTACKS[name], masked=None, generator=generator, precision=eager)
    return counter.get_total_flops() / FLOP_BATCH / 1e9


def peak_tflop_s(device: torch.device, size: int = 8192, repeats: int = 20) -> float | None:
    """The chip's dense bf16 rate, measured: a size×size matrix product timed over `repeats` after a warm-up.
    None off CUDA, where no peak is claimed."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _synchronize(device)
    return round(2 * size**3 * repeats / (time.perf_counter() - started) / 1e12, 1)


def anchor_img_s(name: str, px: int, gflop: float | None, clean_gflop: float | None) -> float | None:
    """The MLPerf anchor of a figure (ANCHOR), None at 32 px."""
    if px != 224:
        return None
    if name in ("clean_train", "imagenet_input"):
        return ANCHOR_CLEAN_IMG_S
    return round(ANCHOR_CLEAN_IMG_S * clean_gflop / gflop, 1)


def rated(figure: Figure, gflop: float | None, peak: float | None, anchor: float | None) -> Figure:
    """The figure with its FLOP rates (the figure's work per second, on both sides) and its shares of the
    chip's peak and of its anchor. Shares are of a CUDA device's figures only: there is no peak without one,
    and the anchor is a GPU's rate."""

    def tflop_s(img_s: float) -> float | None:
        return None if gflop is None else round(gflop * img_s / 1e3, 4)

    ours = tflop_s(figure.ours_img_s)
    on_gpu = figure.device == "cuda"
    return replace(
        figure,
        gflop_per_img=None if gflop is None else round(gflop, 3),
        tflop_s=ours,
        reference_tflop_s=tflop_s(figure.reference_img_s),
        peak_fraction=round(ours / peak, 4) if ours is not None and peak else None,
        anchor_img_s=anchor,
        anchor_fraction=round(figure.ours_img_s / anchor, 4) if anchor and on_gpu else None,
        anchor=ANCHOR if anchor else None,
    )


# ---- the ImageNet input path ---------------------------------------------------------------------------
JPEG_QUALITY = 96
JPEGS_PER_TASK = 16


def _write_jpeg_range(root: Path, start: int, stop: int, seed: int) -> None:
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])  # each file its own stream: the same files from any pool
        height, width = int(rng.integers(300, 501)), int(rng.integers(350, 501))
        ys, xs = np.mgrid[0:height, 0:width]
        base = (ys[..., None] * rng.uniform(0.2, 0.6, 3) + xs[..., None] * rng.uniform(0.2, 0.6, 3)) % 256
        pixels = np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        subsampling = 2 if i % 4 == 3 else 0  # 4:2:0 or 4:4:4
        path = root / "train" / f"n{i % 10:08d}" / f"{i}.JPEG"
        Image.fromarray(pixels).save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=subsampling)


def write_jpegs(root: Path, n: int, seed: int = 0) -> Path:
    """An ImageNet-layout train/ folder of `n` JPEGs of ImageNet's typical sizes (about 500×375), smooth
    gradients with noise so that they compress as photographs do, at quality 96, three in four without chroma
    subsampling and one in four at 4:2:0 (the mix a survey of ImageNet's files reports: PROTOCOL.md section 10).
    A pool of processes writes them: one process took minutes for a thousand."""
    for k in range(min(n, 10)):
        (root / "train" / f"n{k:08d}").mkdir(parents=True, exist_ok=True)
    tasks = [(root, start, min(n, start + JPEGS_PER_TASK), seed) for start in range(0, n, JPEGS_PER_TASK)]
    # fork: the workers need numpy and PIL only, not a fresh import of torch each
    with multiprocessing.get_context("fork").Pool(min(len(tasks), os.cpu_count() or 1)) as pool:
        pool.starmap(_write_jpeg_range, tasks)
    return root


def pass_samples(files: Sequence[tuple[str, int]], batch: int, workers: int) -> list[tuple[str, int]]:
    """The samples of one timed pass: the files, repeated until every loader worker has four batches. A pass of
    fewer batches than workers leaves workers idle and times their start-up, not the decoding."""
    wanted = max(len(files), 4 * max(workers, 1) * batch)
    wanted -= wanted % batch
    return (list(files) * math.ceil(wanted / len(files)))[:wanted]


def _one_pass(batches: Batches, batch: int, device: torch.device, seed: int) -> int:
    """The images of one pass through training batches; one synchronisation at its end, none inside it."""
    images = 0
    for x, _ in batches.train(batch, generator_for(device, seed), drop_last=True):
        images += len(x)
    _synchronize(device)
    return images


def input_rate(
    decoder: str,
    files: Sequence[tuple[str, int]],
    device: torch.device,
    *,
    batch: int,
    rounds: int,
    workers: int,
) -> float:
    """Training batches' images per second through `decoder`: `rounds` timed passes after one untimed pass over
    the files (loader workers, decoders and the page cache warmed)."""
    _one_pass(jpeg_folder_batches(files, PAPER_224, device, workers, decoder), batch, device, 0)
    timed = jpeg_folder_batches(pass_samples(files, batch, workers), PAPER_224, device, workers, decoder)
    started = time.perf_counter()
    images = sum(_one_pass(timed, batch, device, round_ + 1) for round_ in range(rounds))
    return images / (time.perf_counter() - started)


STAGE_ROUNDS = 2  # timed repeats of the main process's part of one batch


def input_stages(
    decoder: str, files: Sequence[tuple[str, int]], device: torch.device, *, batch: int, workers: int
) -> dict[str, float]:
    """Where a device decoder's input time goes, each part timed alone on one batch of the files: what a loader
    worker does per image (reading the file, and decoding it unless the device will), the rate `workers` of them
    could supply at that, and the rate the main process could take their batches at (the device's decoding, the
    copies, the crops and flips). The slower bounds what `input_rate` measures; both say which to speed up."""
    timed = JpegBatches(files[:batch], PAPER_224, device, workers, decoder)
    started = time.perf_counter()
    items = [timed.files[i] for i in range(len(timed))]
    worker_s = (time.perf_counter() - started) / len(items)
    data, where, _ = collate_files(items)
    if device.type == "cuda":  # the loader's own thread pins the tensors the workers hand over
        data = [d.pin_memory() if isinstance(d, torch.Tensor) else d for d in data]
    generator = generator_for(device, 0)
    timed.train_batch(data, where, generator)  # untimed: the decoder's and the kernels' first use
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(STAGE_ROUNDS):
        timed.train_batch(data, where, generator)
    _synchronize(device)
    main_s = (time.perf_counter() - started) / (STAGE_ROUNDS * len(items))
    return dict(
        worker_ms_per_img=round(worker_s * 1e3, 3),
        workers_img_s=round(max(workers, 1) / worker_s, 1),
        main_process_img_s=round(1 / main_s, 1),
    )


DECODING = {
    "turbo": "JPEGs decoded by libjpeg-turbo in {workers} loader workers, cropped on the device",
    "nvjpeg": "every JPEG decoded by nvJPEG on the device in batches and cropped there; workers read the bytes",
    "mixed": "nvJPEG on the device for the files it decodes as libjpeg-turbo does, libjpeg-turbo in {workers} "
    "loader workers for the rest, cropped on the device",
    "nvimgcodec": "every JPEG decoded by nvImageCodec on the device in batches, chroma interpolated, and cropped "
    "there; workers read the bytes",
}


def compare_input(device: torch.device, *, images: int, batch: int, rounds: int, workers: int) -> Iterator[Figure]:
    """Training batches per second from `images` generated ImageNet-sized JPEGs: the reference ("pil", PIL per
    image in DataLoader workers, the official way) timed once, then each of INPUT_DECODERS against it, with where
    its time goes (`input_stages`); one figure per decoder, as each is timed."""
    with tempfile.TemporaryDirectory() as tmp:
        files = imagenet_folder(write_jpegs(Path(tmp), images), "train").samples
        timing = dict(batch=batch, rounds=rounds, workers=workers)
        reference = input_rate("pil", files, device, **timing)
        for decoder in INPUT_DECODERS:
            if decoder == "nvimgcodec" and not nvimgcodec_jpeg.available():
                print(f"the nvimgcodec decoder is not timed: {nvimgcodec_jpeg.PACKAGE} is not installed", flush=True)
                continue
            ours = input_rate(decoder, files, device, **timing)
            yield Figure(
                "imagenet_input",
                224,
                device.type,
                batch,
                round(ours, 3),
                round(reference, 3),
                round(ours / reference, 3),
                "none (input only)",
                rounds * len(pass_samples(files, batch, workers)),
                f"{device.type}: " + DECODING[decoder].format(workers=workers),
                f"PIL decoding and transforms per image in {workers} DataLoader workers",
                decoder=decoder,
                **input_stages(decoder, files, device, batch=batch, workers=workers),
            )


# A clean step costs a tenth of an attacked one: it gets more steps, so each figure is timed for as long.
STEP_WEIGHT = {"adv_train": 1, "clean_train": 8, "pgd20_eval": 1}


def settings(device: torch.device, quick: bool, batch: int | None, name: str, px: int) -> dict:
    """Batch, steps per round, rounds and warm-up: sized for the device, the figure and the time at hand."""
    weight = STEP_WEIGHT[name]
    if device.type == "cuda":
        return dict(
            batch=batch or 128, steps=(2 if quick else 6) * weight, rounds=2 if quick else 3, warmup=2 if quick else 3
        )
    if quick:  # ResNet-50 on a CPU: a PGD-20 batch of two 224 px images already takes seconds
        return dict(batch=batch or (2 if px == 224 else 4), steps=weight, rounds=2, warmup=1)
    return dict(batch=batch or (8 if px == 224 else 32), steps=2 * weight, rounds=3, warmup=1)


def input_settings(device: torch.device, quick: bool, batch: int | None) -> dict:
    return dict(batch=batch or (256 if device.type == "cuda" else 32), rounds=1 if quick else 2)


def environment(device: torch.device, workers: int, peak: float | None) -> dict:
    return {
        "torch_version": torch.__version__,
        "dwlt_version": __version__,
        "python": platform.python_version(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "dataloader_workers": workers,
        "peak_tflop_s": peak,  # measured: a bf16 matrix product (None off CUDA)
    }


def _shown(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def _profile_line(figure: Figure) -> str:
    if not figure.top_work:
        return f"no profile: {figure.profile_note}"
    busy = f"device busy {figure.device_busy:.0%} of the wall time; " if figure.device_busy is not None else ""
    top = ", ".join(f"{work['name'][:40]} {work['share']:.0%}" for work in figure.top_work[:3])
    return f"{busy}costliest: {top}"


class Record:
    """The figures so far: each printed as a row as it comes, and (given a path) the whole file rewritten
    atomically after it, so a bench stopped by a time limit leaves every figure it finished."""

    HEADER = (
        f"{'figure':<28} {'px':>4} {'batch':>5} {'ours img/s':>11} {'reference img/s':>16} {'ratio':>7} "
        f"{'GFLOP/img':>10} {'TFLOP/s':>8} {'peak %':>7} {'anchor %':>9}"
    )

    def __init__(self, path: Path | None, env: dict):
        self.path, self.env, self.figures = path, env, []
        print(self.HEADER, flush=True)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        label = figure.name if figure.decoder is None else f"{figure.name} ({figure.decoder})"
        label += f" ×{figure.processes}" if figure.processes > 1 else ""
        print(
            f"{label:<28} {figure.px:>4} {figure.batch:>5} {figure.ours_img_s:>11,.1f} "
            f"{figure.reference_img_s:>16,.1f} {figure.ratio:>6.2f}x {_shown(figure.gflop_per_img, digits=2):>10} "
            f"{_shown(figure.tflop_s):>8} {_shown(figure.peak_fraction, 100):>7} "
            f"{_shown(figure.anchor_fraction, 100):>9}",
            flush=True,
        )
        if figure.top_work or figure.profile_note:
            print(f"{'':<4}{_profile_line(figure)}", flush=True)
        if figure.worker_ms_per_img is not None:
            print(
                f"{'':<4}a worker's {figure.worker_ms_per_img:,.2f} ms per image: the workers could supply "
                f"{figure.workers_img_s:,.0f} img/s, the main process take {figure.main_process_img_s:,.0f}",
                flush=True,
            )
        if self.path:
            io.write_text(self.path, json.dumps([{**asdict(f), **self.env} for f in self.figures], indent=2) + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dwlt_utils.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--quick", action="store_true", help="a short run (a CPU one stays under 3 minutes)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the engine's model (warm-up untimed)")
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="replay the engine's steps as CUDA graphs (warm-up untimed)"
    )
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 128 on CUDA, small on CPU)")
    parser.add_argument("--px", type=int, nargs="+", default=[224, 32], choices=[224, 32])
    parser.add_argument("--figures", nargs="+", default=list(FIGURES), choices=FIGURES)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader workers of the reference loop and the input path (default with CUDA: up to 8 for the "
        "reference loop, and what IMP reads ImageNet with for the input path, every core but one; none on a CPU, "
        "where workers would take the cores from the compute they feed)",
    )
    parser.add_argument(
        "--imagenet-input",
        type=int,
        default=0,
        metavar="N",
        help="also time the ImageNet input path on N generated JPEGs: each device decoder against PIL",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile a few more steps of each engine figure: the device's busy share and its costliest kernels",
    )
    parser.add_argument(
        "--input-only",
        action="store_true",
        help="time the ImageNet input path alone (with --imagenet-input), none of the engine's figures",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="K",
        help="time each figure in K processes at once on the one device, as K small runs sharing a GPU would "
        "train (each side's rate is theirs together)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    return parser


def run(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    precision = Precision.for_device(device, compile=args.compile, cuda_graphs=args.cuda_graphs)
    on_cuda = device.type == "cuda"
    workers = args.workers if args.workers is not None else (min(8, os.cpu_count() or 1) if on_cuda else 0)
    input_workers = args.workers if args.workers is not None else (loader_workers() if on_cuda else 0)
    check_number("--processes", args.processes, 1, 64, integer=True)
    inputs = input_settings(device, args.quick, args.batch)
    if args.imagenet_input:
        check_number("--imagenet-input", args.imagenet_input, inputs["batch"], 10_000_000, integer=True)
    elif args.input_only:
        raise InputError("--input-only times the ImageNet input path alone: give it --imagenet-input N (N JPEGs).")
    if args.input_only and args.processes > 1:
        raise InputError("--processes K times the engine's figures in K processes; --input-only times none of them.")
    if args.profile and args.processes > 1:
        raise InputError("--profile profiles one process's figures; give it without --processes.")
    engine = [] if args.input_only else [(name, px) for px in args.px for name in args.figures]
    peak = peak_tflop_s(device) if engine else None  # the input path's figures have no FLOPs to set against it
    record = Record(args.json, environment(device, workers, peak))
    # The anchors of every 224 px figure scale by the clean step's FLOPs, counted even when it is not timed.
    clean_gflop = gflop_per_image(*CLEAN_224, precision) if any(px == 224 for _, px in engine) else None
    timings = [(name, px, settings(device, args.quick, args.batch, name, px)) for name, px in engine]
    figures = (
        compare_shared(timings, precision, processes=args.processes, workers=workers)
        if args.processes > 1
        else (
            compare(name, px, precision, workers=workers, profile=args.profile, **sizes) for name, px, sizes in timings
        )
    )
    for figure in figures:
        name, px = figure.name, figure.px
        gflop = clean_gflop if (name, px) == CLEAN_224 else gflop_per_image(name, px, precision)
        record.add(rated(figure, gflop, peak, anchor_img_s(name, px, gflop, clean_gflop)))
    if args.imagenet_input:
        for figure in compare_input(device, images=args.imagenet_input, workers=input_workers, **inputs):
            record.add(rated(figure, None, peak, anchor_img_s(figure.name, 224, None, None)))
    print(f"device: {record.env['device_name']}; ours: {precision.describe()}; torch {torch.__version__}")
    if peak is not None:
        print(f"measured bf16 peak: {peak:,.1f} TFLOP/s")


def main(argv: list[str] | None = None) -> int:
    try:
        run(_parser().parse_args(argv))
    except DwltError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
