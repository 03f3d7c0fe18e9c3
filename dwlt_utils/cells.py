"""The units of work the notebooks run: dense sources, tickets, and transfer cells.

Everything lands under a run root:
- `sources/<profile>/<source>/backbone.pt` (+ `.json`): a dense pre-trained backbone θ_p (notebook 01);
- `tickets/imp/<hash>/seed_<s>/level_XX/`: an IMP ladder (notebook 02); `tickets/<profile>/<source>/omp/...`
  and `.../random/seed_<s>/...`: one-shot tickets, computed when first asked for;
- `transfer/<hash>/seed_<s>/`: one table cell (notebooks 03-05): config, per-epoch metrics, resume state,
  selected checkpoints, the training images used, and `records.csv`.
A cell whose records exist is not recomputed (unless forced); an interrupted one resumes.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.hub import download_url_to_file
from torch.utils.data import Subset

from . import io, results
from .attacks import AttackSpec
from .batches import ArrayBatches, FolderBatches
from .checkpoints import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PretrainedSource,
    get_source,
    load_pretrained_backbone,
    save_backbone_state,
    sidecar_path,
)
from .config import config_hash, run_dir, write_config
from .data import ensure_available, imagenet_folder, limit_train, load_splits, subset_positions
from .engine import Precision, resolve_device
from .errors import InputError, MissingInputError, check_choice, check_number
from .evaluate import evaluate
from .imp import level_dir, run_imp
from .models import backbone_holding, build_backbone, build_model, replace_fc, with_normalization
from .profiles import DEFAULT_IMP, IMP_VARIANTS, PRETRAININGS, QUICK_SOURCE_EPS_255, REGIMES, Profile, PROFILES
from .pruning import MASK_FILE, Mask, level_for_sparsity, one_shot_mask, sparsity_at_level
from .train import TrainConfig, fit, load_selected

TICKETS = ("dense", "imp", "omp", "random")
SUBSETS = ("first", "random", "stratified")


@dataclass(frozen=True)
class Paths:
    data_root: Path
    run_root: Path
    weights_dir: Path = Path("weights")

    @classmethod
    def create(cls, data_root: str, run_root: str, weights_dir: str = "weights", *, base: Path | None = None) -> Paths:
        """Validated folders; relative ones are taken from `base` when given (else the current directory)."""
        for name, value in (("data_root", data_root), ("run_root", run_root), ("weights_dir", weights_dir)):
            if not isinstance(value, (str, Path)) or not str(value).strip():
                raise InputError(f"{name} is a folder path; got {value!r}.")
        folders = [Path(value).expanduser() for value in (data_root, run_root, weights_dir)]
        return cls(*(base / f if base is not None and not f.is_absolute() else f for f in folders))


# ---------------------------------------------------------------------------------------------------
# Dense sources θ_p
def source_eps(pretraining: str, eps_255: float) -> float:
    """The ε a source is identified by: none (0) for the standard model."""
    return 0 if pretraining == "standard" else eps_255


def source_key(pretraining: str, eps_255: float) -> str:
    return "standard" if pretraining == "standard" else f"{pretraining}_linf{eps_255:g}"


def source_path(paths: Paths, profile: Profile, pretraining: str, eps_255: float) -> Path:
    return paths.run_root / "sources" / profile.name / source_key(pretraining, eps_255) / "backbone.pt"


def _how_to_get_source(profile: Profile, pretraining: str, eps_255: float, paths: Paths) -> str:
    if profile.name == "quick":
        return "run notebooks/01_load_pretrained.ipynb with -p quick True (it pre-trains the quick sources)"
    src = get_source(pretraining, eps_255 if pretraining != "standard" else None)
    where = src.url or src.page
    return (f"run notebooks/01_load_pretrained.ipynb, which converts {src.filename} from {paths.weights_dir}/ "
            f"(get it from {where})")


def _source_missing(profile: Profile, pretraining: str, eps_255: float, paths: Paths) -> str | None:
    path = source_path(paths, profile, pretraining, eps_255)
    if path.is_file():
        return None
    return (f"the dense {source_key(pretraining, eps_255)} source is not in {path}: "
            f"{_how_to_get_source(profile, pretraining, eps_255, paths)}")


def _data_missing(dataset: str, paths: Paths, *, download: bool) -> list[str]:
    """[] when the data set's files are there (or can be downloaded), else [how to provide them]."""
    try:
        ensure_available(dataset, paths.data_root, download=download)
    except MissingInputError as err:
        return [str(err).rstrip(".")]
    return []


def _sentence(phrase: str) -> str:
    return phrase[0].upper() + phrase[1:] + "."


def load_source(profile: Profile, pretraining: str, eps_255: float, paths: Paths) -> dict[str, torch.Tensor]:
    """θ_p of one pre-training as a backbone state dict (written by notebook 01)."""
    missing = _source_missing(profile, pretraining, eps_255, paths)
    if missing:
        raise MissingInputError(_sentence(missing))
    return io.load_torch(source_path(paths, profile, pretraining, eps_255))


def prepare_paper_source(
    pretraining: str, eps_255: float, paths: Paths, *, trust: bool = False, download: bool = True
) -> dict:
    """Convert a published checkpoint from `weights_dir` (downloaded there first when possible) into a
    torchvision ResNet-50 state dict that loads strictly; returns the record of the file."""
    src = get_source(pretraining, eps_255 if pretraining != "standard" else None)
    target = source_path(paths, PROFILES["paper"], pretraining, eps_255)
    if target.is_file():
        return io.read_json(sidecar_path(target))
    original = paths.weights_dir / src.filename
    if not original.is_file():
        _download_weights(src, original, download)
    backbone, meta = load_pretrained_backbone("resnet50", original, trust=trust)
    if src.sha256 and meta["sha256"] != src.sha256:
        warnings.warn(f"{original} differs from the published {src.filename} (SHA-256 {meta['sha256']} instead of "
                      f"{src.sha256}); its results are not comparable with the paper's.", stacklevel=2)
    meta.update(registry={"name": src.name, "variant": src.variant, "citation": src.citation,
                          "published_sha256": src.sha256, "imagenet_top1": src.imagenet_top1})
    save_backbone_state(target, backbone.state_dict(), meta)
    return meta


def _download_weights(src: PretrainedSource, destination: Path, download: bool) -> None:
    hint = f"put {src.filename} in {destination.parent}/ (it is published at {src.url or src.page})"
    if not download or src.url is None:
        reason = "it has no direct download link" if src.url is None else "download is off"
        raise MissingInputError(f"The {src.name} weights {src.filename} are not in {destination.parent} and "
                                f"{reason}: {hint}.")
    problem = io.unreachable(src.url)
    if problem:
        raise MissingInputError(f"The {src.name} weights {src.filename} are not in {destination.parent} and "
                                f"cannot be downloaded ({problem}): {hint}.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    download_url_to_file(src.url, str(destination), progress=True)


def check_sources(pretrainings: list, eps_255: float, *, quick: bool) -> list[str]:
    """Validate notebook 01's choice of sources; returns them."""
    if not isinstance(pretrainings, (list, tuple)) or not pretrainings:
        raise InputError(f"pretrainings is a non-empty list such as {list(PRETRAININGS)}; got {pretrainings!r}.")
    for pretraining in pretrainings:
        check_choice("pre-training", pretraining, PRETRAININGS)
        if not quick and pretraining != "standard":
            get_source(pretraining, eps_255)  # raises when no checkpoint of that ε is published
    return list(pretrainings)


def source_summary(pretraining: str, meta: dict) -> dict:
    """One display row for a prepared source."""
    row = {"pre-training": pretraining}
    if meta.get("profile") == "quick":
        row.update({"trained on": f"{meta['train_images']:,} {meta['dataset']} images",
                    "test SA (%)": round(meta["test_SA"], 2), "test RA (%)": round(meta["test_RA"], 2),
                    "RA attack": meta["RA_attack"]})
    else:
        registry = meta.get("registry", {})
        row.update({"variant": registry.get("variant"), "file": Path(meta["file"]).name, "layout": meta["layout"],
                    "SHA-256 matches the published one": meta["sha256"] == registry.get("published_sha256")
                    if registry.get("published_sha256") else "no published hash",
                    "published ImageNet top-1": registry.get("imagenet_top1"),
                    "measured top-1 (val subset)": meta.get("imagenet_top1_subset")})
    return row


def imagenet_top1(backbone_path: Path, imagenet_root: Path, images: int, *, device: str = "auto", seed: int = 0) -> float:
    """Clean top-1 (%) of a converted ImageNet backbone on a class-stratified subset of the validation set."""
    val = imagenet_folder(imagenet_root, "val")
    positions = subset_positions(torch.tensor(val.targets), min(images / len(val), 1.0), "stratified", seed)
    backbone = build_backbone("resnet50", 1000)
    backbone.load_state_dict(io.load_torch(backbone_path), strict=True)
    precision = Precision.for_device(device)
    model = with_normalization(backbone, IMAGENET_MEAN, IMAGENET_STD)
    precision.prepare(model).eval()
    batches = FolderBatches(None, Subset(val, positions.tolist()), precision.device)
    return evaluate(model, batches, precision=precision)["SA"]


def pretrain_quick_source(
    pretraining: str, paths: Paths, *, seed: int, device: str = "auto", progress: bool = True
) -> dict:
    """Pre-train one small source model on Fashion-MNIST (clean, FGSM-RS or PGD), the quick profile's
    stand-in for the published ImageNet models; returns its record (recipe, test SA and RA)."""
    check_choice("pre-training", pretraining, PRETRAININGS)
    profile = PROFILES["quick"]
    eps = source_eps(pretraining, QUICK_SOURCE_EPS_255)
    target = source_path(paths, profile, pretraining, eps)
    if target.is_file():
        return io.read_json(sidecar_path(target))
    splits = load_splits(profile.source_dataset, paths.data_root)
    train = splits.train.take(torch.arange(profile.source_images))
    torch.manual_seed(seed)
    model = build_model(profile.arch, splits.info.num_classes, splits.info.mean, splits.info.std)
    precision = Precision.for_device(resolve_device(device))
    recipe = profile.pretrain[pretraining]
    fit(model, ArrayBatches(train, profile.source_transforms, precision.device), None, recipe,
        target.parent / "train", seed=seed, precision=precision, progress=progress)
    attack = AttackSpec(eps_255=QUICK_SOURCE_EPS_255, alpha_255=QUICK_SOURCE_EPS_255 / 4, steps=20)
    test = ArrayBatches(splits.test.take(torch.arange(2000)), profile.source_transforms, precision.device)
    scores = evaluate(model.eval(), test, attack=attack, precision=precision, batch_size=500)
    meta = {"profile": "quick", "pretraining": pretraining, "dataset": profile.source_dataset,
            "train_images": profile.source_images, "recipe": dataclasses.asdict(recipe), "seed": seed,
            "test_images": 2000, "test_SA": scores["SA"], "test_RA": scores["RA"], "RA_attack": attack.describe()}
    save_backbone_state(target, model.model.state_dict(), meta)
    return meta


# ---------------------------------------------------------------------------------------------------
# Tickets
@dataclass(frozen=True)
class ImpConfig:
    """What identifies an IMP ladder; the number of levels is not part of it (a ladder only grows)."""

    profile: str = "paper"
    pretraining: str = "standard"
    source_eps_255: float = 0
    variant: str = "s-imp"
    epochs_per_level: int = 30
    source_fraction: float = 1.0

    @classmethod
    def create(cls, *, quick: bool, pretraining: str, source_eps_255: float = 4, variant: str = "auto",
               epochs_per_level: int = 0, source_fraction: float = 1.0) -> ImpConfig:
        """Validated, with "auto" and 0 resolved to the profile's protocol values."""
        profile = PROFILES["quick" if quick else "paper"]
        check_choice("pre-training", pretraining, PRETRAININGS)
        check_choice("IMP variant", variant, ("auto", *IMP_VARIANTS))
        check_number("source_eps_255", source_eps_255, 0, 255)
        check_number("epochs_per_level", epochs_per_level, 0, 10_000, integer=True)
        check_number("source_fraction", source_fraction, 0, 1, low_open=True)
        variant = DEFAULT_IMP[pretraining] if variant == "auto" else variant
        epochs = epochs_per_level or profile.imp_recipe(variant).epochs
        return cls(profile.name, pretraining, source_eps(pretraining, source_eps_255), variant, epochs, source_fraction)

    def recipe(self) -> TrainConfig:
        return replace(PROFILES[self.profile].imp_recipe(self.variant), epochs=self.epochs_per_level)

    def deviations(self) -> list[str]:
        protocol = PROFILES[self.profile].imp_recipe(self.variant).epochs
        out = [f"IMP {self.epochs_per_level} epochs per level instead of {protocol}"] if self.epochs_per_level != protocol else []
        if self.source_fraction != 1.0:
            out.append(f"IMP on {self.source_fraction:g} of the source data")
        return out

    def describe(self) -> str:
        return f"{self.variant.upper()} of {source_key(self.pretraining, self.source_eps_255)} ({self.profile} profile)"


def check_imp_inputs(
    config: ImpConfig, paths: Paths, *, levels: int, imagenet_root: str, one_shot_sparsities: list
) -> int:
    """Validate notebook 02's remaining parameters and find its inputs; returns the number of levels."""
    profile = PROFILES[config.profile]
    check_number("levels", levels, 0, 40, integer=True)
    if not isinstance(one_shot_sparsities, (list, tuple)):
        raise InputError(f"one_shot_sparsities is a list of numbers in [0, 1); got {one_shot_sparsities!r}.")
    for value in one_shot_sparsities:
        check_number("a one-shot sparsity", value, 0, 0.9999)
    missing = [m for m in (_source_missing(profile, config.pretraining, config.source_eps_255, paths),) if m]
    if profile.source_transforms is None and not (imagenet_root and Path(imagenet_root, "train").is_dir()):
        missing.append(f"IMP on ImageNet needs its training images, and {imagenet_root or 'no imagenet_root'} has no "
                       "train/ folder: pass -p imagenet_root /path/to/imagenet (with train/ and val/ image folders)")
    elif profile.source_transforms is not None:
        missing += _data_missing(profile.source_dataset, paths, download=False)
    if missing:
        raise MissingInputError("Cannot run this ladder: " + "; ".join(missing) + ".")
    return levels or profile.levels


def ladder_table(masks: list[Mask]) -> pd.DataFrame:
    """One row per level: the ladder sparsity, the mask's exact one, and the weights kept."""
    return pd.DataFrame([
        {"level": k, "ladder sparsity (%)": round(100 * sparsity_at_level(k), 2),
         "exact sparsity (%)": round(100 * mask.sparsity, 4), "weights kept": mask.kept, "of": mask.total}
        for k, mask in enumerate(masks, start=1)
    ]).set_index("level")


def imp_dir(config: ImpConfig, paths: Paths, seed: int) -> Path:
    return run_dir(paths.run_root / "tickets", "imp", config, seed)


def imp_level_dir(config: ImpConfig, paths: Paths, seed: int, level: int) -> Path:
    return level_dir(imp_dir(config, paths, seed), level)


def run_imp_ladder(
    config: ImpConfig, paths: Paths, *, levels: int, seed: int, device: str = "auto",
    imagenet_root: str = "", workers: int = 8, progress: bool = True, torch_compile: bool = False,
) -> list[Mask]:
    """The IMP ladder of `config` up to `levels`, resuming whatever is on disk."""
    check_number("levels", levels, 1, 40, integer=True)
    profile = PROFILES[config.profile]
    state = load_source(profile, config.pretraining, config.source_eps_255, paths)
    precision = Precision.for_device(resolve_device(device), compile=torch_compile)
    if profile.source_transforms is not None:
        splits = load_splits(profile.source_dataset, paths.data_root)
        train = splits.train.take(torch.arange(profile.imp_images))
        if config.source_fraction < 1:
            train = train.take(subset_positions(train.labels, config.source_fraction, "stratified", seed))
        batches = ArrayBatches(train, profile.source_transforms, precision.device)
        mean, std = splits.info.mean, splits.info.std
    else:
        if not imagenet_root:
            raise MissingInputError("IMP on ImageNet needs its training images: pass -p imagenet_root "
                                    "/path/to/imagenet (a folder with train/ and val/ image folders).")
        train_set = imagenet_folder(imagenet_root, "train")
        if config.source_fraction < 1:  # class-sorted folders: a stratified subset, never the first N
            positions = subset_positions(torch.tensor(train_set.targets), config.source_fraction, "stratified", seed)
            train_set = Subset(train_set, positions.tolist())
        batches = FolderBatches(train_set, None, precision.device, workers)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    directory = imp_dir(config, paths, seed)
    write_config(directory, config, seed=seed, deviations=config.deviations())
    return run_imp(profile.arch, state, mean, std, batches, None, config.recipe(), directory,
                   levels=levels, seed=seed, precision=precision, progress=progress)


def one_shot_dir(paths: Paths, profile: Profile, pretraining: str, eps_255: float, method: str,
                 sparsity: float, seed: int) -> Path:
    base = paths.run_root / "tickets" / profile.name / source_key(pretraining, eps_255)
    base = base / "omp" if method == "magnitude" else base / "random" / f"seed_{seed}"
    return base / f"sparsity_{sparsity:.4f}"


def one_shot_ticket(profile: Profile, pretraining: str, eps_255: float, method: str, sparsity: float,
                    paths: Paths, *, seed: int) -> Mask:
    """One-shot magnitude (OMP) or random pruning of θ_p at any sparsity, saved on first use."""
    check_choice("one-shot method", method, ("magnitude", "random"))
    check_number("sparsity", sparsity, 0, 1)
    directory = one_shot_dir(paths, profile, pretraining, eps_255, method, sparsity, seed)
    if (directory / MASK_FILE).is_file():
        return Mask.load(directory)
    backbone = backbone_holding(profile.arch, load_source(profile, pretraining, eps_255, paths))
    mask = one_shot_mask(backbone, sparsity, method, torch.Generator().manual_seed(seed))
    mask.save(directory)
    return mask


# ---------------------------------------------------------------------------------------------------
# Transfer cells
@dataclass(frozen=True)
class TransferConfig:
    """One table cell: (pre-training, data set, regime, ticket, data budget) and the recipe that trains it."""

    profile: str
    pretraining: str
    source_eps_255: float
    dataset: str  # the paper's data set; the quick profile trains on its stand-in
    regime: str
    ticket: str
    level: int
    imp: ImpConfig | None  # the ladder an IMP ticket comes from
    ticket_seed: int  # IMP and random tickets: which replicate
    data_fraction: float
    subset: str
    recipe: TrainConfig

    @classmethod
    def create(
        cls, *, quick: bool, pretraining: str, dataset: str, regime: str, ticket: str, sparsity: float,
        source_eps_255: float = 4, imp: str = "auto", imp_epochs: int = 0, ticket_seed: int = 1,
        data_fraction: float = 1.0, subset: str = "first", epochs: int = 0, eps_255: float = 8,
        train_steps: int = 10, eval_steps: int = 20,
    ) -> TransferConfig:
        """Validate notebook parameters and resolve them into a cell; raises one clear sentence."""
        profile = PROFILES["quick" if quick else "paper"]
        check_choice("pre-training", pretraining, PRETRAININGS)
        profile.dataset(dataset)  # validates the name (and that the quick profile has a stand-in)
        check_choice("regime", regime, REGIMES)
        check_choice("ticket", ticket, TICKETS)
        check_number("data_fraction", data_fraction, 0, 1, low_open=True)
        check_choice("subset", subset, SUBSETS)
        check_number("epochs", epochs, 0, 10_000, integer=True)
        check_number("ticket_seed", ticket_seed, 0, 2**31 - 1, integer=True)
        for name, value in (("eps_255", eps_255), ("source_eps_255", source_eps_255)):
            check_number(name, value, 0, 255)
        check_number("train_steps", train_steps, 1, 1000, integer=True)
        check_number("eval_steps", eval_steps, 1, 1000, integer=True)
        if ticket == "dense":
            level = 0
            if sparsity not in (0, 0.0):
                raise InputError(f"A dense cell has sparsity 0; got {sparsity!r} (choose ticket imp, omp or random).")
        else:
            level = level_for_sparsity(sparsity)
            if level == 0:
                raise InputError("Sparsity 0 is the dense model: use ticket 'dense'.")
        imp_config = (ImpConfig.create(quick=quick, pretraining=pretraining, source_eps_255=source_eps_255,
                                       variant=imp, epochs_per_level=imp_epochs) if ticket == "imp" else None)
        recipe = profile.transfer_recipe(regime, dataset)
        if epochs and epochs != recipe.epochs:
            recipe = recipe.shortened(epochs)
        if recipe.attack is not None:
            recipe = replace(
                recipe,
                attack=replace(recipe.attack, eps_255=eps_255, alpha_255=eps_255 / 4, steps=train_steps),
                val_attack=replace(recipe.val_attack, eps_255=eps_255, alpha_255=eps_255 / 4, steps=eval_steps),
            )
        return cls(profile.name, pretraining, source_eps(pretraining, source_eps_255), dataset, regime, ticket,
                   level, imp_config, ticket_seed if ticket in ("imp", "random") else 0, data_fraction, subset, recipe)

    @property
    def sparsity(self) -> float:
        """The ladder sparsity of the ticket (the value papers print); the exact one is in its mask report."""
        return sparsity_at_level(self.level)

    def deviations(self) -> list[str]:
        """How this cell departs from its profile's protocol, in words (empty: it follows it)."""
        protocol = PROFILES[self.profile].transfer_recipe(self.regime, self.dataset)
        out = []
        if self.recipe.epochs != protocol.epochs:
            out.append(f"{self.recipe.epochs} epochs instead of {protocol.epochs}")
        for name, ours, theirs in (("training attack", self.recipe.attack, protocol.attack),
                                   ("evaluation attack", self.recipe.val_attack, protocol.val_attack)):
            if ours != theirs:
                out.append(f"{name} {ours.describe()} instead of {theirs.describe()}")
        return out + (self.imp.deviations() if self.imp else [])

    def describe(self) -> str:
        ticket = "dense" if self.ticket == "dense" else f"{self.ticket} ticket at {self.sparsity:.2%} (level {self.level})"
        budget = "" if self.data_fraction == 1 else f", {self.data_fraction:g} of the training data ({self.subset})"
        return (f"{self.regime} transfer of {source_key(self.pretraining, self.source_eps_255)} to {self.dataset}, "
                f"{ticket}{budget}, {self.profile} profile")

    def dense(self) -> TransferConfig:
        """The dense baseline of this cell (same pre-training, data, regime and recipe)."""
        return replace(self, ticket="dense", level=0, imp=None, ticket_seed=0)


def transfer_dir(config: TransferConfig, paths: Paths, seed: int) -> Path:
    return run_dir(paths.run_root, "transfer", config, seed)


def _ticket_missing(config: TransferConfig, paths: Paths) -> str | None:
    if config.ticket != "imp":
        return None
    level = imp_level_dir(config.imp, paths, config.ticket_seed, config.level)
    if (level / MASK_FILE).is_file():
        return None
    return (f"the IMP ticket at level {config.level} ({config.sparsity:.2%}) of {config.imp.describe()} is not in "
            f"{level}: run notebooks/02_imp.ipynb with -p pretraining {config.pretraining} -p levels {config.level}"
            f"{' -p quick True' if config.profile == 'quick' else ''} first")


def missing_inputs(config: TransferConfig, paths: Paths, *, download: bool = True) -> list[str]:
    """What a cell needs and does not find, each as a phrase that says how to provide it."""
    profile = PROFILES[config.profile]
    missing = [m for m in (_source_missing(profile, config.pretraining, config.source_eps_255, paths),
                           _ticket_missing(config, paths)) if m]
    return missing + _data_missing(profile.dataset(config.dataset), paths, download=download)


def require_inputs(config: TransferConfig, paths: Paths, *, download: bool = True) -> None:
    missing = missing_inputs(config, paths, download=download)
    if missing:
        raise MissingInputError("Cannot run this cell: " + "; ".join(missing) + ".")


def ticket_mask(config: TransferConfig, paths: Paths) -> Mask | None:
    if config.ticket == "dense":
        return None
    if config.ticket == "imp":
        message = _ticket_missing(config, paths)
        if message:
            raise MissingInputError(_sentence(message))
        return Mask.load(imp_level_dir(config.imp, paths, config.ticket_seed, config.level))
    method = "magnitude" if config.ticket == "omp" else "random"
    return one_shot_ticket(PROFILES[config.profile], config.pretraining, config.source_eps_255, method,
                           config.sparsity, paths, seed=config.ticket_seed)


def check_regimes(regimes: list) -> list[str]:
    if not isinstance(regimes, (list, tuple)) or not regimes:
        raise InputError(f"regimes is a non-empty list of {list(REGIMES)}; got {regimes!r}.")
    for regime in regimes:
        check_choice("regime", regime, REGIMES)
    return list(dict.fromkeys(regimes))


def git_revision() -> str:
    """The commit of the checkout the package runs from, "" outside one (e.g. an installed wheel)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def run_transfer(
    config: TransferConfig, paths: Paths, *, seed: int, notebook: str, device: str = "auto",
    download: bool = True, force: bool = False, progress: bool = True, torch_compile: bool = False,
) -> pd.DataFrame:
    """Train and test one cell; returns its records (those on disk when the cell is already done)."""
    directory = transfer_dir(config, paths, seed)
    if (directory / results.RECORDS_FILE).is_file() and not force:
        return results.load(directory)
    require_inputs(config, paths, download=download)
    with io.exclusive(directory / ".lock"):  # parallel sweep jobs asking for one cell train it once
        if (directory / results.RECORDS_FILE).is_file() and not force:
            return results.load(directory)
        precision = Precision.for_device(resolve_device(device), compile=torch_compile)
        return _train_and_test(config, paths, directory, seed=seed, notebook=notebook, precision=precision,
                               download=download, force=force, progress=progress)


def _train_and_test(
    config: TransferConfig, paths: Paths, directory: Path, *, seed: int, notebook: str, precision: Precision,
    download: bool, force: bool, progress: bool,
) -> pd.DataFrame:
    profile = PROFILES[config.profile]
    splits = load_splits(profile.dataset(config.dataset), paths.data_root, download=download)
    if config.data_fraction < 1:
        splits = limit_train(splits, config.data_fraction, config.subset, seed)
    backbone = backbone_holding(profile.arch, load_source(profile, config.pretraining, config.source_eps_255, paths))
    replace_fc(backbone, splits.info.num_classes, seed)
    model = with_normalization(backbone, splits.info.mean, splits.info.std)
    mask = ticket_mask(config, paths)

    if force:
        for stale in directory.iterdir():  # a forced rerun starts from nothing
            if stale.name != ".lock":
                stale.unlink()
    deviations = config.deviations()
    write_config(directory, config, seed=seed, notebook=notebook, deviations=deviations,
                 cell=config.describe(), data_root=paths.data_root, run_root=paths.run_root)
    io.write_json(directory / "train_indices.json", splits.train.indices.tolist())
    batches = {name: ArrayBatches(getattr(splits, name), profile.transforms, precision.device)
               for name in ("train", "val", "test")}
    result = fit(model, batches["train"], batches["val"], config.recipe, directory, seed=seed, mask=mask,
                 precision=precision, progress=progress)

    started = time.perf_counter()
    rows = []
    for selection in config.recipe.keep:
        load_selected(model, result, selection)
        scores = evaluate(model.eval(), batches["test"], attack=config.recipe.val_attack, precision=precision,
                          batch_size=profile.eval_batch_size)
        for metric, value in scores.items():
            rows.append(dict(metric=metric, checkpoint=selection, value=value,
                             attack=config.recipe.val_attack.describe() if metric == "RA" else ""))
    wall = sum(row["wall_s"] for row in result.history) + time.perf_counter() - started
    info = splits.info
    records = [
        results.make_record(
            notebook=notebook, profile=config.profile, pretraining=config.pretraining, dataset=info.name,
            stands_for=config.dataset, regime=config.regime, data_fraction=config.data_fraction,
            subset=config.subset, ticket=config.ticket, level=config.level, sparsity=config.sparsity,
            seed=seed, deviations="; ".join(deviations),
            sparsity_denominator=_denominator(backbone), device=precision.describe(),
            git_rev=git_revision(), run_id=str(directory.relative_to(paths.run_root)),
            config_hash=config_hash(config), wall_s=wall, **row,
        )
        for row in rows
    ]
    results.write_records(directory, records)
    return results.to_frame(records)


def _denominator(backbone: torch.nn.Module) -> str:
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    return f"all {sum(m.weight.numel() for m in convs):,} weights of the {len(convs)} backbone Conv2d layers"


def run_cell_with_dense(
    config: TransferConfig, paths: Paths, *, seed: int, notebook: str, dense_baseline: bool = True, **kwargs: Any
) -> pd.DataFrame:
    """A cell and, when asked, its dense baseline (run once, then read from disk)."""
    frames = []
    if dense_baseline and config.ticket != "dense":
        frames.append(run_transfer(config.dense(), paths, seed=seed, notebook=notebook, **{**kwargs, "force": False}))
    frames.append(run_transfer(config, paths, seed=seed, notebook=notebook, **kwargs))
    return pd.concat(frames, ignore_index=True)

