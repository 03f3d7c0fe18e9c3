"""What a run costs before it runs: its work in three per-image units, and their prices measured by the
benchmark or read off the wall times of finished runs (`plans` adds them up for `cli plan`).

The work model. A run's time is linear in three counts of per-image work at its input size:
- training steps: forward, backward and optimiser step of clean training, per image of every epoch;
- attack steps inside training: one PGD step in train mode on top of its training step (PGD-k: k each);
- evaluation forwards: a clean evaluation is one per image; SA with PGD-k RA is 2 + 3k, since an attack
  step (a forward and a backward of about twice its cost) counts as three forwards.
A transfer run trains `epochs` over its training images, validates the epochs its recipe validates and tests
each kept checkpoint; an IMP level trains `epochs_per_level` over the source images (level 1 needs no
training: it is one-shot pruning of the source).

The prices of the three units, in seconds per image, come from one of two places:
- the benchmark (`python -m dwlt_utils.bench --json bench.json`) of the engine at the run's model and image
  size (`bench_arch`): a training step is 1 / clean_train img/s, an attack step (1 / adv_train - 1 / clean_train) / 10
  (its training attack is PGD-10), a forward (1 / pgd20_eval) / 62 (SA and PGD-20 RA: 2 + 3·20 forwards);
- the wall times of finished runs of the same profile, kind (standard or adversarial transfer, S-IMP or
  A-IMP levels) and image size under the run root: their recorded seconds over their work counted in forwards
  (a training step and an attack step three each). They measured the real thing on the device they ran on, so
  they go first unless `prices="bench"`; the plan names which priced each row.

An IMP ladder of the paper profile reads ImageNet's JPEGs: its decoder delivers at most so many images per
second, whatever the GPU could train. Each image is priced at the slower of its training and its input, the
input at the bench's `imagenet_input` figure of the ladder's decoder (`ours_img_s` is that decoder's rate,
`reference_img_s` PIL's). With no such figure the ladder is priced by its training alone, and the plan says so.

An AutoAttack check (`eval_attack="autoattack"`, `autoattack.AutoAttackCheck`) is evaluation forwards: see
`check_forwards`. So are the tests on corrupted images (`eval_corruptions`): see `corruption_work`.

A run at 32 px (`resolution=32`: the CIFAR stem, the profile's 32 px pipeline) is priced by prices of 32 px
only, never by those of 224 px; with none, the plan refuses in one sentence, as it does at 224 px.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path

import pandas as pd

from . import io, paths, transfer
from .attacks import PGD10_TRAIN, PGD20_EVAL, AttackSpec
from .autoattack import AutoAttack
from .bench import FIGURES, PIPELINES
from .corruptions import SEVERITIES
from .data import IMAGENET_TRAIN_IMAGES, dataset_info
from .errors import DwltError, InputError, MissingInputError, check_choice
from .gpu_check import EAGER_BENCH_STEPS
from .profiles import PROFILES, Profile
from .tickets import ImpConfig
from .train import TrainConfig, read_metrics
from .vocabulary import REGIMES

PRICES = ("auto", "records", "bench")
FORWARDS_PER_STEP = 3  # a training step or an attack step, counted in forwards (records' one price)


@dataclass(frozen=True)
class Work:
    """Per-image work of a run: training steps, attack steps inside training, evaluation forwards."""

    train: float = 0.0
    attack: float = 0.0
    forward: float = 0.0

    def __add__(self, other: Work) -> Work:
        return Work(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __mul__(self, k: float) -> Work:
        return Work(*(getattr(self, f.name) * k for f in fields(self)))

    @property
    def forwards(self) -> float:
        return FORWARDS_PER_STEP * (self.train + self.attack) + self.forward


def eval_forwards(attack: AttackSpec | None) -> int:
    """Forwards per image of an evaluation: SA alone, or SA and the attack's RA."""
    return 1 if attack is None else 2 + FORWARDS_PER_STEP * attack.steps


def training_work(recipe: TrainConfig, train_images: int, val_images: int) -> Work:
    validated = sum(recipe.validates(epoch) for epoch in range(recipe.epochs))
    return Work(
        train=recipe.epochs * train_images,
        attack=recipe.epochs * train_images * (recipe.attack.steps if recipe.attack else 0),
        forward=validated * val_images * eval_forwards(recipe.val_attack),
    )


def test_work(config: transfer.TransferConfig) -> Work:
    """The work of a run's test: each kept checkpoint on its test images (up to its cap)."""
    info = dataset_info(PROFILES[config.profile].dataset(config.dataset))
    tests = min(config.test_images or info.test_size, info.test_size)
    return Work(forward=len(config.recipe.keep) * tests * eval_forwards(config.recipe.val_attack))


def run_work(config: transfer.TransferConfig) -> Work:
    """The work of one transfer run: training, validation, test."""
    info = dataset_info(PROFILES[config.profile].dataset(config.dataset))
    train_images = int(info.train_size * config.data_fraction)
    return training_work(config.recipe, train_images, config.val_images or info.val_size) + test_work(config)


def corruption_work(config: transfer.TransferConfig) -> Work:
    """The work of a run's tests on corrupted images (`transfer.run_corruptions`): its test once per corruption
    and severity, since each corrupted set is its test images corrupted (capped alike) and tested alike."""
    return test_work(config) * (len(transfer.corruptions_of(config)) * len(SEVERITIES))


def imp_images(config: ImpConfig) -> int:
    """The source images one IMP epoch trains on."""
    total = PROFILES[config.profile].imp_images or IMAGENET_TRAIN_IMAGES
    return int(total * config.source_fraction)


def imp_work(config: ImpConfig, trainings: int) -> Work:
    """The work of `trainings` IMP levels of a ladder (one training makes one level)."""
    return training_work(config.recipe(), imp_images(config), 0) * trainings


def check_forwards(pgd: AttackSpec, attack: AutoAttack) -> int:
    """Forwards per image of one checkpoint's AutoAttack check, an upper bound: it counts every image as
    surviving every attack, though each attack runs only on the images the ones before it left robust.
    APGD-CE takes `iterations` attack steps, APGD-T and FAB-T as many per target class (a FAB step counted as
    an attack step), Square `square_queries` forwards; the evaluation adds its clean and its final forward,
    and the PGD evaluation beside it its SA and RA (2 + 3k)."""
    attack_steps = attack.iterations * (1 + 2 * attack.target_classes)
    return eval_forwards(pgd) + 2 + FORWARDS_PER_STEP * attack_steps + attack.square_queries


def check_work(config: transfer.TransferConfig, images: int) -> Work:
    """The work of the AutoAttack check of an adversarial run: each kept checkpoint on `images` test images."""
    pgd = config.recipe.val_attack
    return Work(forward=len(config.recipe.keep) * images * check_forwards(pgd, AutoAttack(pgd.eps_255)))


# ---- prices


@dataclass(frozen=True)
class Prices:
    """Seconds per image of each unit of `Work`, and what measured them."""

    train: float
    attack: float
    forward: float
    source: str
    on_gpu: bool
    includes_input: bool  # whether what measured them read the runs' data too (recorded runs) or not (bench)

    def seconds(self, work: Work) -> float:
        return self.train * work.train + self.attack * work.attack + self.forward * work.forward

    @classmethod
    def per_forward(cls, seconds: float, source: str, on_gpu: bool) -> Prices:
        step = FORWARDS_PER_STEP * seconds
        return cls(step, step, seconds, source, on_gpu, includes_input=True)


INPUT_FIGURE = "imagenet_input"  # bench's figure of ImageNet's input path, 224 px
UNNAMED_INPUT_DECODER = "nvjpeg"  # what an input figure of a bench that did not name its decoder measured
REFERENCE_DECODER = "pil"  # an input figure's reference: PIL per image in DataLoader workers
RATES = ("ours_img_s", "reference_img_s")
FIGURE_FIELDS = ("name", "px", "arch", "ours", "device", "device_name", *RATES)  # what a plan reads of a figure


def _figure_name(figure: dict) -> str:
    decoder = f", {figure['decoder']} decoder" if figure.get("decoder") else ""
    return f"{figure['name']} figure ({figure['px']} px{decoder})"


@dataclass(frozen=True)
class BenchFile:
    """The figures of a `bench --json` file, every rate a finite and positive number of images per second; or
    those of a GPU check's report (`gpu_check`) that time the engine as the notebooks run it by default."""

    path: Path
    figures: tuple[dict, ...]

    @classmethod
    def read(cls, path: Path) -> BenchFile:
        try:
            content = json.loads(Path(path).read_text())
            if isinstance(content, dict) and "figures" in content:
                content = [figure for figure in content["figures"] if figure.get("step") in EAGER_BENCH_STEPS]
            figures = tuple(content)
            absent = [key for figure in figures for key in FIGURE_FIELDS if key not in figure]
            if absent:
                raise KeyError(absent[0])
            rates = [(figure, key, float(figure[key])) for figure in figures for key in RATES]
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as err:
            raise InputError(
                f"{path} is not a benchmark file ({type(err).__name__}: {err}); `python -m dwlt_utils.bench --json "
                f"{path}` writes one."
            ) from None
        for figure, key, rate in rates:
            if not (math.isfinite(rate) and rate > 0):
                raise InputError(
                    f"{path} gives its {_figure_name(figure)} {key} = {rate:g}, which is not a positive number of "
                    "images per second; run bench again."
                )
        return cls(Path(path), figures)

    def prices(self, profile: Profile, px: int) -> Prices | None:
        """The unit prices of the profile's model at `px` (None: the file has no figures of them), from figures of
        one process: those of several processes timed at once (`bench --processes`) are their sum, no run's."""
        arch = bench_arch(profile, px)
        rates = {
            f["name"]: float(f["ours_img_s"])
            for f in self.figures
            if f["arch"] == arch and f["px"] == px and f.get("processes", 1) == 1
        }
        if not rates:
            return None
        missing = [name for name in FIGURES if name not in rates]
        if missing:
            raise InputError(
                f"{self.path} lacks the figures {', '.join(missing)} of {arch} at {px} px; the plan needs all of "
                "adv_train, clean_train and pgd20_eval (run bench without --figures)."
            )
        train = 1 / rates["clean_train"]
        attack = (1 / rates["adv_train"] - train) / PGD10_TRAIN.steps
        if attack <= 0:
            raise InputError(
                f"{self.path} says PGD-10 training of {arch} at {px} px is as fast as clean training, which cannot "
                "be right; run bench again without other work on the device."
            )
        forward = 1 / rates["pgd20_eval"] / eval_forwards(PGD20_EVAL)
        first = self.figures[0]
        on_gpu = first["device"] == "cuda"
        return Prices(train, attack, forward, f"bench on {first['device_name']}", on_gpu, includes_input=False)

    def slowdown(self, profile: Profile, px: int, kind: str, processes: int) -> float | None:
        """How much longer a run of `kind` takes when `processes` runs share the GPU: `processes` times the
        training figure of one process over that of `processes` timed at once (`bench --processes`); None when
        the file lacks either."""
        arch, figure = bench_arch(profile, px), SHARED_FIGURE[kind]
        rates = {
            f.get("processes", 1): float(f["ours_img_s"])
            for f in self.figures
            if (f["name"], f["arch"], f["px"]) == (figure, arch, px)
        }
        if 1 not in rates or processes not in rates:
            return None
        return processes * rates[1] / rates[processes]

    def input_rates(self) -> dict[str, float]:
        """Images per second that ImageNet's input delivers, by decoder: each input figure's own and PIL, its
        reference (the slowest, where several figures measured one decoder)."""
        measured = defaultdict(list)
        for figure in self.figures:
            if figure["name"] == INPUT_FIGURE:
                measured[figure.get("decoder") or UNNAMED_INPUT_DECODER].append(float(figure["ours_img_s"]))
                measured[REFERENCE_DECODER].append(float(figure["reference_img_s"]))
        return {decoder: min(rates) for decoder, rates in measured.items()}

    def trains_bf16(self) -> bool:
        """Whether the engine's training figures were timed under bf16 autocast (bench's way on a GPU)."""
        return any("bf16" in f["ours"] for f in self.figures if f["name"] == "clean_train")


# The figure that says how much a run of each regime slows down when runs share a GPU: its training.
SHARED_FIGURE = {"std": "clean_train", "adv": "adv_train"}

# Bench times the paper's model with the CIFAR stem of 32 px runs as an architecture of its own.
WITH_CIFAR_STEM = {PIPELINES[224][0]: PIPELINES[32][0]}


def bench_arch(profile: Profile, px: int) -> str:
    """The profile's model at `px` as bench names it: at its 32 px pipeline's size the model has the CIFAR stem."""
    return WITH_CIFAR_STEM.get(profile.arch, profile.arch) if px == profile.transforms_32px.size else profile.arch


@dataclass
class _Measured:
    forwards: float = 0.0
    wall_s: float = 0.0
    runs: int = 0
    devices: set = field(default_factory=set)


def _recipe(plain: dict) -> TrainConfig:
    """A `TrainConfig` from the plain dict that a run's written configuration holds (`config.write_config`)."""
    attacks = {name: AttackSpec(**plain[name]) if plain[name] else None for name in ("attack", "val_attack")}
    return TrainConfig(**{**plain, **attacks, "milestones": tuple(plain["milestones"]), "keep": tuple(plain["keep"])})


def _transfer_config(plain: dict) -> transfer.TransferConfig:
    """A `TransferConfig` from the plain dict that a run's written configuration holds (fields it lacks, from
    before they existed, take their defaults)."""
    imp = ImpConfig(**plain["imp"]) if plain["imp"] else None
    return transfer.TransferConfig(**{**plain, "recipe": _recipe(plain["recipe"]), "imp": imp})


PriceKey = tuple[str, str, int]  # profile, kind of run, image size


def recorded_prices(run_root: Path) -> tuple[dict[PriceKey, Prices], list[str]]:
    """Prices per (profile, kind, px) from the finished runs and IMP epochs under a run root, and the run
    directories that could not be read (left out)."""
    measured: dict[PriceKey, _Measured] = defaultdict(_Measured)
    unreadable = []
    for run in paths.recorded_transfer_runs(run_root):
        try:
            config = _transfer_config(io.read_json(paths.config_file(run))["config"])
            records = pd.read_csv(paths.records_file(run), usecols=["wall_s", "device"])
            work = run_work(config)
        except (DwltError, OSError, ValueError, KeyError, TypeError) as err:
            unreadable.append(f"{run} ({type(err).__name__})")
            continue
        if records.empty:
            continue
        entry = measured[(config.profile, config.regime, config.transforms.size)]
        entry.forwards += work.forwards
        entry.wall_s += float(records.wall_s.iloc[0])
        entry.runs += 1
        entry.devices.add(str(records.device.iloc[0]))
    for ladder in paths.imp_ladders(run_root):
        try:
            written = io.read_json(paths.config_file(ladder))
            config = ImpConfig(**written["config"])
            logs = [read_metrics(d) for d in paths.level_trainings(ladder)]
        except (DwltError, OSError, ValueError, KeyError, TypeError) as err:
            unreadable.append(f"{ladder} ({type(err).__name__})")
            continue
        epochs = sum(len(log) for log in logs)
        if not epochs:
            continue
        entry = measured[(config.profile, config.variant, PROFILES[config.profile].transforms.size)]
        entry.forwards += (
            training_work(config.recipe(), imp_images(config), 0).forwards / config.epochs_per_level * epochs
        )
        entry.wall_s += float(sum(log.wall_s.sum() for log in logs))
        entry.runs += 1
        entry.devices.add(written.get("device", "device not recorded"))
    prices = {
        key: Prices.per_forward(
            m.wall_s / m.forwards,
            f"{m.runs} recorded {'ladder' if key[1] not in REGIMES else 'run'}{'s' * (m.runs != 1)} "
            f"({', '.join(sorted(m.devices))})",
            all(device.startswith("cuda") for device in m.devices),
        )
        for key, m in measured.items()
        if m.forwards
    }
    return prices, unreadable


class Pricer:
    """Prices a run's work by its profile, kind and image size: recorded runs first (unless `prices` says), then
    bench."""

    def __init__(self, run_root: Path, bench: Path | None = None, prices: str = "auto"):
        check_choice("prices", prices, PRICES)
        self.prices = prices
        self.recorded, self.unreadable = recorded_prices(run_root) if prices != "bench" else ({}, [])
        self.bench = BenchFile.read(bench) if bench and prices != "records" else None
        self.used: set[Prices] = set()
        self.unmeasured_decoders: set[str] = set()
        self.fp32_at_bf16 = False

    def price(self, profile: Profile, kind: str, px: int) -> Prices:
        recorded = self.recorded.get((profile.name, kind, px))
        if recorded:
            return recorded
        benched = self.bench.prices(profile, px) if self.bench else None
        if benched:
            return benched
        measured = f"{bench_arch(profile, px)} at {px} px"
        if profile.name != "paper":
            give = "its recorded runs; bench does not measure its model"
        elif self.bench:
            raise MissingInputError(
                f"{self.bench.path} has none of the figures of {measured} that price {kind} runs of the paper "
                "profile; `python -m dwlt_utils.bench --json FILE` on the GPU you plan for writes them."
            )
        else:
            give = f"bench figures of {measured} (--bench FILE)"
        raise MissingInputError(
            f"Nothing prices {kind} runs of the {profile.name} profile at {px} px: finish one such run under the run "
            f"root, or give {give}."
        )

    def seconds(self, profile: Profile, kind: str, px: int, work: Work, *, per_gpu: int = 1) -> tuple[float, str]:
        """The wall seconds of `work` and what priced them; with `per_gpu`, of a run sharing its GPU with as many
        (the bench's `slowdown`)."""
        prices = self.price(profile, kind, px)
        self.used.add(prices)
        if per_gpu == 1:
            return prices.seconds(work), prices.source
        slowdown = self.bench.slowdown(profile, px, kind, per_gpu) if self.bench else None
        if slowdown is None:
            measured = f"{bench_arch(profile, px)} at {px} px"
            lacking = f"{self.bench.path} has none of {measured}" if self.bench else f"no --bench file gives {measured}"
            raise MissingInputError(
                f"--per-gpu {per_gpu} prices runs sharing a GPU by bench figures of {per_gpu} processes at once beside "
                f"one process's, and {lacking}; `python -m dwlt_utils.bench --px {px} --processes {per_gpu} --json "
                "FILE` on the GPU you plan for measures them."
            )
        return prices.seconds(work) * slowdown, f"{prices.source}, {per_gpu} per GPU (×{slowdown:.2f} each)"

    def ladder_seconds(self, config: ImpConfig, trainings: int) -> tuple[float, str]:
        """Seconds of `trainings` levels of a ladder on one process and what priced them: a ladder that reads
        ImageNet's JPEGs spends on each image the longer of its training and its input's time (1 / the input
        rate of its decoder), when the bench measured that rate."""
        profile = PROFILES[config.profile]
        prices = self.price(profile, config.variant, profile.transforms.size)
        self.used.add(prices)
        work = imp_work(config, trainings)
        training = prices.seconds(work)
        if profile.source_transforms is not None:  # an in-memory source: no JPEGs to decode
            return training, prices.source
        if not prices.includes_input and config.precision == "fp32" and self.bench.trains_bf16():
            self.fp32_at_bf16 = True
        rate = self.bench.input_rates().get(config.decoder) if self.bench else None
        if rate is None:
            if prices.includes_input:  # recorded levels read their images too
                return training, prices.source
            self.unmeasured_decoders.add(config.decoder)
            return training, f"{prices.source}, training alone ({config.decoder} input not measured)"
        input_seconds = work.train / rate  # one training step per image of every epoch
        bound = "input" if input_seconds > training else "training"
        return max(training, input_seconds), f"{prices.source}, {bound}-bound ({config.decoder} {rate:,.0f} img/s)"

    def caveats(self) -> list[str]:
        """What a reader of the plan must know about its prices: any measured off a GPU, input rates not
        measured, fp32 priced at bf16 speed, runs left out."""
        lines = []
        off_gpu = sorted({p.source for p in self.used if not p.on_gpu})
        if off_gpu:
            lines.append(
                f"Priced off a GPU ({'; '.join(off_gpu)}): those hours are of that device, not of a GPU; a --bench "
                "file from the GPU you plan for (and --prices bench) prices the paper profile for it."
            )
        if self.unmeasured_decoders:
            decoders = " and ".join(sorted(self.unmeasured_decoders))
            lines.append(
                f"The input rate of the {decoders} decoder was not measured (the bench file has no {INPUT_FIGURE} "
                "figure of it), so the IMP ladders that decode with it are priced by their training alone and their "
                "price may be low; `python -m dwlt_utils.bench --json FILE --imagenet-input N` measures it."
            )
        if self.fp32_at_bf16:
            lines.append(
                "The bench timed training under bf16 autocast and the IMP ladders train in fp32, so their price may be "
                "low."
            )
        if self.unreadable:
            lines.append(
                f"{len(self.unreadable)} run directories could not be read and price nothing: {self.unreadable[0]}"
            )
        return lines
