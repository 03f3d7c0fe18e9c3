"""Images per second of the training engine against a loop written the way the official code works.

    python -m dwlt_utils.bench [--device auto|cpu|cuda] [--quick] [--compile] [--json PATH]

The reference loop is the official one's shape: fp32, per-sample PIL transforms in a DataLoader with
worker processes, PGD whose every step also computes (and later discards) the parameters' gradients, and
`.item()` after every step. The engine: uint8 data resident on the device, augmentation batched there,
bf16 autocast and channels_last on CUDA, attack steps that ask for the input gradient only, no host
synchronisation inside an epoch, optional `torch.compile`. Both run the same model, data, batch size and
number of steps, alternating round by round after a warm-up that is not timed; the figures are images per
second and their ratio, for PGD-10 adversarial training steps, clean training steps and PGD-20 evaluation,
at 224 px (ResNet-50) and 32 px (its 32 px variant). `--imagenet-input N` adds the ImageNet input path of
IMP: training batches per second from N generated ImageNet-sized JPEGs, decoded in batches and cropped on the
device (`batches.JpegBatches`) against PIL per image in DataLoader workers.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from . import __version__
from .attacks import PGD10_TRAIN, PGD20_EVAL, AttackSpec
from .augment import PAPER_32, PAPER_224
from .batches import ArrayBatches, FolderBatches, JpegBatches
from .data import DATASETS, ImageArrays, imagenet_folder, pil_transforms
from .engine import Precision, generator_for, resolve_device
from .evaluate import evaluate
from .models import build_model
from .train import TrainConfig, make_optimizer, train_step

FIGURES = ("adv_train", "clean_train", "pgd20_eval")
PIPELINES = {224: ("resnet50", PAPER_224), 32: ("resnet50_32px", PAPER_32)}
CIFAR = DATASETS["cifar10"]


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
        self.attack = {"adv_train": PGD10_TRAIN, "clean_train": None, "pgd20_eval": PGD20_EVAL}[name]
        recipe = TrainConfig(epochs=1, batch_size=batch, lr=0.01, weight_decay=5e-4)
        self.optimizer = (
            torch.optim.SGD(
                model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
            )
            if reference
            else make_optimizer(model, recipe)
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


def compare(
    name: str,
    px: int,
    precision: Precision,
    *,
    batch: int,
    steps: int,
    rounds: int,
    warmup: int,
    workers: int,
    seed: int = 0,
) -> Figure:
    """Time the engine and the reference on one figure, alternating `rounds` times after `warmup` steps."""
    arch, _ = PIPELINES[px]
    generator = torch.Generator().manual_seed(seed)
    n = batch * steps * 2
    arrays = ImageArrays(
        torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8),
        torch.randint(0, CIFAR.num_classes, (n,), generator=generator),
        torch.arange(n),
    )
    torch.manual_seed(seed)
    model = build_model(arch, CIFAR.num_classes, CIFAR.mean, CIFAR.std)
    reference_model = copy.deepcopy(model).to(precision.device)
    ours = Loop(name, px, arrays, batch, precision, precision.prepare(model), reference=False, workers=workers)
    fp32 = Precision(precision.device, bf16=False, channels_last=False)
    theirs = Loop(name, px, arrays, batch, fp32, reference_model, reference=True, workers=workers)
    timed = {"ours": [0.0, 0], "reference": [0.0, 0]}
    for loop in (ours, theirs):
        loop.run(warmup)
    _synchronize(precision.device)
    for round_ in range(rounds):
        order = (("ours", ours), ("reference", theirs))
        for key, loop in order if round_ % 2 == 0 else order[::-1]:  # neither side always goes first
            started = time.perf_counter()
            images = loop.run(steps)
            _synchronize(precision.device)
            timed[key][0] += time.perf_counter() - started
            timed[key][1] += images
    ours_rate, ref_rate = (timed[k][1] / timed[k][0] for k in ("ours", "reference"))
    return Figure(
        name,
        px,
        precision.device.type,
        batch,
        round(ours_rate, 3),
        round(ref_rate, 3),
        round(ours_rate / ref_rate, 3),
        arch,
        steps * rounds,
        precision.describe(),
        f"{precision.device.type}, fp32, PIL transforms in a DataLoader ({workers} workers), param-grad PGD, "
        ".item() per step",
    )


# ---- the ImageNet input path ---------------------------------------------------------------------------
def write_jpegs(root: Path, n: int, seed: int = 0) -> Path:
    """An ImageNet-layout train/ folder of `n` JPEGs of ImageNet's typical sizes (about 500×375, quality 90),
    smooth gradients with noise, so that they compress as photographs do."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        height, width = int(rng.integers(300, 501)), int(rng.integers(350, 501))
        ys, xs = np.mgrid[0:height, 0:width]
        base = (ys[..., None] * rng.uniform(0.2, 0.6, 3) + xs[..., None] * rng.uniform(0.2, 0.6, 3)) % 256
        pixels = np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        folder = root / "train" / f"n{i % 10:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i}.JPEG", format="JPEG", quality=90)
    return root


def compare_input(device: torch.device, *, images: int, batch: int, rounds: int, workers: int) -> Figure:
    """Training batches per second from ImageNet-sized JPEGs: decoded in batches and cropped on the device
    (`JpegBatches`) against PIL per image in DataLoader workers (`FolderBatches`, the official way)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = write_jpegs(Path(tmp), images)
        folder = imagenet_folder(root, "train")
        sides = {
            "ours": JpegBatches(folder.samples, PAPER_224, device, workers),
            "reference": FolderBatches(folder, None, device, workers),
        }
        timed = {"ours": 0.0, "reference": 0.0}
        for round_ in range(rounds + 1):  # the first round is a warm-up
            for name, batches in sides.items():
                started = time.perf_counter()
                for x, _ in batches.train(batch, generator_for(device, round_), drop_last=True):
                    x.sum().item()  # the batch is there
                if round_:
                    timed[name] += time.perf_counter() - started
    done = rounds * (images - images % batch)
    ours, ref = done / timed["ours"], done / timed["reference"]
    return Figure(
        "imagenet_input",
        224,
        device.type,
        batch,
        round(ours, 3),
        round(ref, 3),
        round(ours / ref, 3),
        "none (input only)",
        done,
        f"{device.type}: file bytes read by {workers} workers, JPEGs decoded in batches and cropped on the device",
        f"PIL decoding and transforms per image in {workers} DataLoader workers",
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


def environment(device: torch.device, workers: int) -> dict:
    return {
        "torch_version": torch.__version__,
        "dwlt_version": __version__,
        "python": platform.python_version(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "dataloader_workers": workers,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dwlt_utils.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--quick", action="store_true", help="a short run (a CPU one stays under 3 minutes)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the engine's model (warm-up untimed)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 128 on CUDA, small on CPU)")
    parser.add_argument("--px", type=int, nargs="+", default=[224, 32], choices=[224, 32])
    parser.add_argument("--figures", nargs="+", default=list(FIGURES), choices=FIGURES)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader workers of the reference loop (default: up to 8 with CUDA, none on a CPU, "
        "where workers would take the cores from the compute they feed)",
    )
    parser.add_argument(
        "--imagenet-input",
        type=int,
        default=0,
        metavar="N",
        help="also time the ImageNet input path on N generated JPEGs: batches decoded on the device against PIL",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    precision = Precision.for_device(device, compile=args.compile)
    workers = (
        args.workers if args.workers is not None else (min(8, os.cpu_count() or 1) if device.type == "cuda" else 0)
    )
    figures = []
    print(f"{'figure':<12} {'px':>4} {'batch':>5} {'ours img/s':>11} {'reference img/s':>16} {'ratio':>7}")
    for px in args.px:
        for name in args.figures:
            figure = compare(name, px, precision, workers=workers, **settings(device, args.quick, args.batch, name, px))
            figures.append(figure)
            print(
                f"{figure.name:<12} {px:>4} {figure.batch:>5} {figure.ours_img_s:>11.2f} "
                f"{figure.reference_img_s:>16.2f} {figure.ratio:>6.2f}x",
                flush=True,
            )
    if args.imagenet_input:
        batch = args.batch or (256 if device.type == "cuda" else 32)
        figure = compare_input(device, images=args.imagenet_input, batch=batch, rounds=2, workers=workers)
        figures.append(figure)
        print(
            f"{figure.name:<12} {224:>4} {figure.batch:>5} {figure.ours_img_s:>11.2f} {figure.reference_img_s:>16.2f} "
            f"{figure.ratio:>6.2f}x",
            flush=True,
        )
    env = environment(device, workers)
    print(f"device: {env['device_name']}; ours: {precision.describe()}; torch {torch.__version__}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([{**asdict(f), **env} for f in figures], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
