"""Notebook 02: tickets of a dense source. The IMP ladder (PROTOCOL.md section 3) up to any level,
resumable level by level, and one-shot tickets (magnitude pruning, the OMP baseline, and random pruning)
at any sparsity, made when first asked for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import distributed, paths, sources, vocabulary
from .augment import PAPER_224
from .batches import DECODER_DEVIATIONS, ArrayBatches, Batches, jpeg_folder_batches, loader_workers, resolve_decoder
from .checkpoints import DEFAULT_EPS_255, IMAGENET_MEAN, IMAGENET_STD
from .config import to_plain, write_config
from .data import check_trainable, imagenet_folder, load_splits, subset_positions
from .distributed import SINGLE, Launch, Ranks
from .engine import Precision
from .errors import InputError, MissingInputError, check_choice, check_number, sentence
from .imp import next_level, run_imp
from .models import backbone_holding
from .notebook import Parameters, Session, shell_line
from .paths import Roots
from .profiles import DEFAULT_IMP, PROFILES, Profile, quick_parameter
from .pruning import Mask, export_ticket, one_shot_mask, sparsity_at_level
from .results import LADDER_DEVIATION
from .train import TrainConfig
from .vocabulary import IMP_VARIANTS, ONE_SHOT_METHODS, PRECISIONS, PRETRAININGS, source_key

# A ladder's processes, named as the user gives them (a refusal that said "processes" named no parameter).
LADDER_PROCESSES = "nproc_per_node × nnodes (notebook 02; imp_processes in 03-05)"
GPUS_PER_NODE = 8  # how the notebook 02 parameters of a ladder of more processes split them into nodes
AUTO_WORKERS = -1  # notebook 02's `workers`: each process's share of its node's cores, less one (`loader_workers`)


def node_split(processes: int) -> dict[str, int]:
    """Notebook 02's nproc_per_node and nnodes for a ladder of `processes`: the fewest nodes of at most
    `GPUS_PER_NODE` processes each that split them evenly."""
    nodes = next(n for n in range(-(-processes // GPUS_PER_NODE), processes + 1) if processes % n == 0)
    return {"nproc_per_node": processes // nodes, "nnodes": nodes}


@dataclass(frozen=True)
class ImpConfig:
    """What identifies an IMP ladder; the number of levels is not part of it (a ladder only grows)."""

    profile: str = "paper"
    pretraining: str = "standard"
    source_eps_255: float = 0
    variant: str = "s-imp"
    epochs_per_level: int = 30
    source_fraction: float = 1.0
    # DDP processes of each level's training: BatchNorm sees batch / processes images, so a ladder computed on
    # N processes is another ladder than one computed on M (PROTOCOL.md section 3).
    processes: int = 1
    # What the levels computed in (records never mix bf16 with fp32) and how ImageNet's JPEGs were decoded
    # (`batches.DECODERS`; a ladder of array data, the quick profile's, reads no JPEG and keeps "pil").
    precision: str = "fp32"
    decoder: str = "pil"
    # How a level's epochs draw their data order and crops: "global", as the official code's
    # set_epoch(epoch) over the ladder's epochs (each level its own draws), or "level", every level drawing
    # those of level 1 (ladders computed before; kept as the default so that their identity stays theirs).
    data_order: str = "level"

    @classmethod
    def create(
        cls,
        *,
        profile: Profile,
        pretraining: str,
        source_eps_255: float = 4,
        variant: str = "auto",
        epochs_per_level: int = 0,
        source_fraction: float = 1.0,
        processes: int = 1,
        precision: str = "fp32",
        decoder: str = "auto",
    ) -> ImpConfig:
        """Validated, with "auto" and 0 resolved to the profile's protocol values."""
        check_choice("pre-training", pretraining, PRETRAININGS)
        check_choice("IMP variant", variant, ("auto", *IMP_VARIANTS))
        check_number("source_eps_255", source_eps_255, 0, 255)
        check_number("epochs_per_level", epochs_per_level, 0, 10_000, integer=True)
        check_number("source_fraction", source_fraction, 0, 1, low_open=True)
        profile.check_source_eps(pretraining, source_eps_255)
        if profile.imp_images is not None:
            what = f"{profile.source_dataset} images IMP trains on"
            check_trainable("source_fraction", source_fraction, profile.imp_images, what)
        variant = DEFAULT_IMP[pretraining] if variant == "auto" else variant
        epochs = epochs_per_level or profile.imp_recipe(variant).epochs
        eps = vocabulary.source_eps_255(pretraining, source_eps_255)
        check_number(LADDER_PROCESSES, processes, 1, 4096, integer=True)
        Ranks(world=processes).batch_size(profile.imp_recipe(variant).batch_size)  # the batch must split evenly
        check_choice("precision of the ladder", precision, [p for p in PRECISIONS if p != "auto"])
        decoder = resolve_decoder(decoder) if profile.source_transforms is None else "pil"
        return cls(
            profile.name, pretraining, eps, variant, epochs, source_fraction, processes, precision, decoder, "global"
        )

    def recipe(self) -> TrainConfig:
        return replace(PROFILES[self.profile].imp_recipe(self.variant), epochs=self.epochs_per_level)

    def deviations(self) -> list[str]:
        protocol = PROFILES[self.profile].imp_recipe(self.variant).epochs
        out = (
            [
                f"{LADDER_DEVIATION}{self.epochs_per_level} epoch{'s' * (self.epochs_per_level != 1)} per level "
                f"instead of {protocol}"
            ]
            if self.epochs_per_level != protocol
            else []
        )
        if self.source_fraction != 1.0:
            out.append(f"{LADDER_DEVIATION}on {self.source_fraction:g} of the source data")
        if self.decoder in DECODER_DEVIATIONS:
            out.append(f"{LADDER_DEVIATION}{DECODER_DEVIATIONS[self.decoder]}")
        return out

    def notebook_parameters(self, seed: int) -> Parameters:
        """The parameters of notebook 02 that compute this ladder with this seed: its processes split into
        nodes of `GPUS_PER_NODE` when it has more (a ladder is the same on any split of its processes)."""
        protocol = PROFILES[self.profile].imp_recipe(self.variant).epochs
        return Parameters.of(
            "02_imp",
            {
                "quick": quick_parameter(self.profile),
                "seed": seed,
                "precision": self.precision,  # "auto" means another one on another machine
                "pretraining": self.pretraining,
                "source_eps_255": self.source_eps_255 or DEFAULT_EPS_255,
                "imp_variant": "auto" if self.variant == DEFAULT_IMP[self.pretraining] else self.variant,
                "epochs_per_level": 0 if self.epochs_per_level == protocol else self.epochs_per_level,
                "source_fraction": self.source_fraction,
                **node_split(self.processes),
                "decoder": "auto" if self.decoder == resolve_decoder("auto") else self.decoder,
            },
        )

    def transfer_parameters(self, precision: str) -> dict[str, Any]:
        """The `imp_*` parameters of a transfer notebook (03-05) that name this ladder, in a notebook that runs
        in `precision`."""
        protocol = PROFILES[self.profile].imp_recipe(self.variant).epochs
        return {
            "imp_variant": "auto" if self.variant == DEFAULT_IMP[self.pretraining] else self.variant,
            "imp_epochs": 0 if self.epochs_per_level == protocol else self.epochs_per_level,
            "imp_processes": self.processes,
            "imp_precision": "auto" if self.precision == precision else self.precision,
            "imp_decoder": "auto" if self.decoder == resolve_decoder("auto") else self.decoder,
        }

    def epoch_offset(self, level: int) -> int:
        """The ladder's epoch at which the training of level `level` into the next one starts."""
        return (level - 1) * self.epochs_per_level if self.data_order == "global" else 0

    @property
    def device_batch(self) -> int:
        """The images of each process's share of a batch: what BatchNorm normalises over."""
        return self.recipe().batch_size // self.processes

    def describe(self) -> str:
        where = f", on {self.processes} processes (BatchNorm over {self.device_batch})" if self.processes > 1 else ""
        decoded = f", JPEGs decoded by {self.decoder}" if self.decoder != "pil" else ""
        return (
            f"{self.variant.upper()} of {source_key(self.pretraining, self.source_eps_255)} ({self.profile} profile"
            f", {self.precision}{where}{decoded})"
        )


@dataclass(frozen=True)
class LadderPlan:
    """What notebook 02's parameters make: a ladder up to a level, where its processes start, where it reads
    ImageNet, and the one-shot tickets built beside it."""

    parameters: Parameters
    ladder: ImpConfig
    directory: Path
    levels: int
    launch: Launch
    imagenet_root: Path | None
    one_shot_sparsities: tuple[float, ...]

    def done(self) -> bool:
        """Whether the ladder has its top level."""
        return Mask.exists(paths.level_dir(self.directory, self.levels))

    def locks(self) -> list[Path]:
        return []  # a ladder resumes level by level; two notebooks computing one are not kept apart

    def progress(self) -> tuple[bool, float]:
        """Whether the ladder is done, and no wall seconds: a ladder records no wall time of its own."""
        return self.done(), 0.0


def plan(session: Session, parameters: Parameters) -> LadderPlan:
    """The ladder notebook 02 computes with these parameters, in the session's precision, on
    nproc_per_node × nnodes processes; validated (one clear sentence on bad input), nothing read from disk."""
    launch = Launch(*(parameters[name] for name in ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint")))
    ladder = ImpConfig.create(
        profile=session.profile,
        pretraining=parameters["pretraining"],
        source_eps_255=parameters["source_eps_255"],
        variant=parameters["imp_variant"],
        epochs_per_level=parameters["epochs_per_level"],
        source_fraction=parameters["source_fraction"],
        processes=launch.world,
        precision=session.precision.name,
        decoder=parameters["decoder"],
    )
    levels, sparsities = parameters["levels"], parameters["one_shot_sparsities"]
    check_number("levels", levels, 0, 40, integer=True)
    if not isinstance(sparsities, (list, tuple)):
        raise InputError(f"one_shot_sparsities is a list of numbers in [0, 1); got {sparsities!r}.")
    for value in sparsities:
        check_number("a one-shot sparsity", value, 0, 0.9999)
    imagenet = session.folder("imagenet_root", parameters["imagenet_root"], optional=True)
    directory = session.roots.imp_ladder(ladder, session.seed)
    top = levels or session.profile.levels
    return LadderPlan(parameters, ladder, directory, top, launch, imagenet, tuple(sparsities))


def ladder_table(masks: list[Mask]) -> pd.DataFrame:
    """One row per level: the ladder sparsity, the mask's exact one, and the weights kept."""
    return pd.DataFrame(
        [
            {
                "level": k,
                "ladder sparsity (%)": round(100 * sparsity_at_level(k), 2),
                "exact sparsity (%)": round(100 * mask.sparsity, 4),
                "weights kept": mask.kept,
                "of": mask.total,
            }
            for k, mask in enumerate(masks, start=1)
        ]
    ).set_index("level")


def _spec_ladder(spec: dict) -> tuple[ImpConfig, Roots]:
    roots = Roots(*(Path(spec["roots"][name]) for name in ("data_root", "run_root", "weights_dir")))
    return ImpConfig(**spec["config"]), roots


@dataclass
class LevelTrainer:
    """Trains the levels of one ladder on this process (`imp.next_level`), its inputs built once."""

    config: ImpConfig
    roots: Roots
    precision: Precision
    seed: int
    imagenet_root: Path | None = None
    workers: int = field(default_factory=loader_workers)
    progress: str = "off"
    ranks: Ranks = SINGLE

    @cached_property
    def source_state(self) -> dict:
        """θ_p, read once for every level (and for level 1, which `imp.run_imp` prunes from it)."""
        return sources.load(
            PROFILES[self.config.profile], self.config.pretraining, self.config.source_eps_255, self.roots
        )

    def spec(self) -> dict:
        """This trainer as a torchrun worker rebuilds it (`from_spec`; it crosses as JSON), its ranks left out."""
        return {
            "config": to_plain(self.config),
            "roots": to_plain(self.roots),
            "device": self.precision.device.type,
            "bf16": self.precision.bf16,
            "seed": self.seed,
            "imagenet_root": str(self.imagenet_root or ""),
            "workers": self.workers,
            "progress": "phases" if self.progress == "bar" else self.progress,  # a worker shows no bar
        }

    @classmethod
    def from_spec(cls, spec: dict, ranks: Ranks) -> LevelTrainer:
        """The trainer of `spec` on one rank of a torchrun worker: its own GPU, and progress shown by rank 0."""
        config, roots = _spec_ladder(spec)
        device = f"cuda:{ranks.local}" if spec["device"] == "cuda" else "cpu"
        return cls(
            config,
            roots,
            Precision.for_device(device, bf16=spec["bf16"]),
            spec["seed"],
            Path(spec["imagenet_root"]) if spec["imagenet_root"] else None,
            spec["workers"],
            spec["progress"] if ranks.main else "off",
            ranks,
        )

    @staticmethod
    def spec_training_dir(spec: dict, level: int) -> Path:
        """Where a spec's level trains into the next one, known even when its trainer cannot be built."""
        config, roots = _spec_ladder(spec)
        return paths.level_training_dir(roots.imp_ladder(config, spec["seed"]), level)

    def require_inputs(self) -> None:
        """Find what the levels train on before anything of the ladder is written. A ladder of several
        processes reads ImageNet in its workers, so here its folder is only looked for."""
        reads_jpegs = PROFILES[self.config.profile].source_transforms is None
        if reads_jpegs and self.config.processes > 1:
            if not (self.imagenet_root and (self.imagenet_root / "train").is_dir()):
                raise MissingInputError(
                    f"IMP on ImageNet needs its training images, and {self.imagenet_root or 'no imagenet_root'} has "
                    "no train/ folder: pass -p imagenet_root /path/to/imagenet (with train/ and val/ image folders)."
                )
        else:
            _ = self._inputs  # read and verified once, kept for the levels

    @cached_property
    def _inputs(self) -> tuple[Batches, tuple, tuple]:
        profile = PROFILES[self.config.profile]
        if profile.source_transforms is not None:
            splits = load_splits(profile.source_dataset, self.roots.data_root)
            train = splits.train.take(torch.arange(profile.imp_images))
            if self.config.source_fraction < 1:
                positions = subset_positions(train.labels, self.config.source_fraction, "stratified", self.seed)
                train = train.take(positions)
            batches = ArrayBatches(train, profile.source_transforms, self.precision.device)
            return batches, splits.info.mean, splits.info.std
        if not self.imagenet_root:
            raise MissingInputError(
                "IMP on ImageNet needs its training images: pass -p imagenet_root "
                "/path/to/imagenet (a folder with train/ and val/ image folders)."
            )
        train_set = imagenet_folder(self.imagenet_root, "train")
        what = "ImageNet training images"
        check_trainable("source_fraction", self.config.source_fraction, len(train_set), what)
        samples = train_set.samples
        if self.config.source_fraction < 1:  # class-sorted folders: a stratified subset, never the first N
            targets = torch.tensor(train_set.targets)
            positions = subset_positions(targets, self.config.source_fraction, "stratified", self.seed)
            samples = [samples[i] for i in positions.tolist()]
        # the protocol's ImageNet crops, from the ladder's decoder
        batches = jpeg_folder_batches(samples, PAPER_224, self.precision.device, self.workers, self.config.decoder)
        return batches, IMAGENET_MEAN, IMAGENET_STD

    def __call__(self, level: int) -> Mask:
        batches, mean, std = self._inputs
        return next_level(
            PROFILES[self.config.profile].arch,
            self.source_state,
            mean,
            std,
            batches,
            self.config.recipe(),
            self.roots.imp_ladder(self.config, self.seed),
            level,
            seed=self.seed,
            precision=self.precision,
            progress=self.progress,
            ranks=self.ranks,
            epoch_offset=self.config.epoch_offset(level),
        )


def run_imp_ladder(
    config: ImpConfig,
    session: Session,
    *,
    levels: int,
    imagenet_root: Path | None = None,
    workers: int = AUTO_WORKERS,
    launch: Launch | None = None,
) -> list[Mask]:
    """The IMP ladder of `config` up to `levels`, resuming whatever is on disk; a ladder of several processes
    trains each level as a torchrun job of `launch` (by default on one node, or nodes of `GPUS_PER_NODE`).
    Each process reads ImageNet with `workers` DataLoader workers (AUTO_WORKERS: `loader_workers` of the
    processes on its node). Notebook 02 passes what `plan` made of its parameters."""
    check_number("levels", levels, 1, 40, integer=True)
    check_number("workers", workers, AUTO_WORKERS, 1024, integer=True)
    launch = launch or Launch(**node_split(config.processes))
    workers = loader_workers(launch.nproc_per_node) if workers == AUTO_WORKERS else workers
    if launch.world != config.processes:
        raise InputError(f"This ladder trains on {config.processes} processes, but the launch starts {launch.world}.")
    profile, roots, precision, seed = PROFILES[config.profile], session.roots, session.precision, session.seed
    if precision.name != config.precision:
        raise InputError(
            f"This ladder computes in {config.precision}, but the notebook runs in {precision.name}; give both the "
            f"same precision (-p precision {config.precision})."
        )
    ladder = roots.imp_ladder(config, seed)
    trainer = LevelTrainer(config, roots, precision, seed, imagenet_root, workers, session.progress)
    state = trainer.source_state  # read before anything of the ladder is written
    if not Mask.exists(paths.level_dir(ladder, levels)):
        trainer.require_inputs()
    # The device is kept for plans that price IMP levels from the ladder's recorded epochs (`costs`).
    write_config(
        paths.config_file(ladder),
        config,
        seed=seed,
        deviations=config.deviations(),
        device=precision.describe(),
        device_batch=config.device_batch,
    )
    if config.processes > 1:
        spec = json.dumps(trainer.spec())

        def train_level(level: int) -> None:
            distributed.run_torchrun(
                launch,
                "dwlt_utils.imp_worker",
                [spec, str(level)],
                folder=paths.level_training_dir(ladder, level),
                what=f"IMP level {level} → {level + 1} on {config.processes} processes",
            )
    else:
        train_level = trainer
    return run_imp(profile.arch, state, ladder, levels=levels, train_level=train_level)


def export_official(config: ImpConfig, roots: Roots, seed: int, masks: list[Mask]) -> list[Path]:
    """Every level of a ladder also as a ticket file in the layout the official code reads."""
    return [
        export_ticket(paths.official_ticket_file(roots.imp_level(config, seed, level)), mask)
        for level, mask in enumerate(masks, start=1)
    ]


def _not_computed(config: ImpConfig, roots: Roots, directory: Path, level: int, seed: int) -> str:
    command = shell_line([config.notebook_parameters(seed).but(levels=level).at(roots)])
    return (
        f"the IMP ticket at level {level} ({sparsity_at_level(level):.2%}) of {config.describe()} is not in "
        f"{directory}: run `{command}` first"
    )


def _level_remedy(directory: Path) -> str:
    return f"delete {directory} and re-run notebooks/02_imp.ipynb, which makes it again"


def imp_ticket(config: ImpConfig, roots: Roots, seed: int, level: int) -> Mask:
    directory = roots.imp_level(config, seed, level)
    if not Mask.exists(directory):
        raise MissingInputError(sentence(_not_computed(config, roots, directory, level, seed)))
    return Mask.load(directory, remedy=_level_remedy(directory))


def one_shot_ticket(
    profile: Profile,
    pretraining: str,
    eps_255: float,
    method: str,
    sparsity: float,
    roots: Roots,
    *,
    seed: int,
    source: Callable[[], dict] | None = None,
) -> Mask:
    """One-shot magnitude (OMP) or random pruning of θ_p at any sparsity, saved on first use; `source` gives
    θ_p when it was read already."""
    check_choice("one-shot method", method, ONE_SHOT_METHODS)
    check_number("sparsity", sparsity, 0, 1)
    directory = roots.one_shot(profile.name, pretraining, eps_255, method, sparsity, seed)
    if Mask.exists(directory):
        return Mask.load(directory, remedy="delete it: the next run that asks for this ticket makes it again")
    state = source() if source else sources.load(profile, pretraining, eps_255, roots)
    backbone = backbone_holding(profile.arch, state)
    mask = one_shot_mask(backbone, sparsity, method, torch.Generator().manual_seed(seed))
    mask.save(directory)
    return mask
