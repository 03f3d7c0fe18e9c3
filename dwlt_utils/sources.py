"""Notebook 01: the dense pre-trained sources θ_p that every ticket and transfer starts from.

In the paper profile a source is a published ImageNet ResNet-50 checkpoint (PROTOCOL.md section 2),
read safely, converted to a state dict of the architecture the source names and checked against its
published hash (and, with ImageNet at hand, its top-1). A profile that pre-trains its own sources (the
quick profile) trains them here on its stand-in source data set: clean, FGSM with random start, or PGD.
Either way the backbone is saved where `paths.Roots.source` says, with a JSON record beside it, and
later notebooks `load` it.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import torch
from torch.hub import download_url_to_file
from torch.utils.data import Subset

from . import io, paths
from .attacks import AttackSpec
from .batches import ArrayBatches, FolderBatches
from .checkpoints import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PretrainedSource,
    get_source,
    load_pretrained_backbone,
    read_checksums,
    save_backbone_state,
)
from .data import imagenet_folder, load_splits, subset_positions
from .engine import Precision
from .errors import (
    DwltError,
    FileFormatError,
    InputError,
    MissingInputError,
    UntrustedFileError,
    check_choice,
    sentence,
)
from .evaluate import evaluate
from .models import backbone_holding, build_model, with_normalization
from .notebook import Session
from .paths import Roots
from .profiles import Profile
from .train import fit
from .vocabulary import PRETRAININGS, source_eps_255, source_key

PRETRAINED_TEST_IMAGES = 2000  # test images a pre-trained source is scored on (SA and PGD-20 RA)


def _remedy(profile: Profile) -> str:
    flag = f" with {profile.flag}" if profile.flag else ""
    return f"delete it and re-run notebooks/01_load_pretrained.ipynb{flag}, which makes it again"


def _damage(path: Path) -> str | None:
    """None when a source file verifies: its SHA-256 is the one recorded beside it when it was written (a
    record without one: it reads as a weights-only file); else what is wrong with it."""
    sidecar = paths.sidecar_file(path)
    try:
        recorded = io.read_json(sidecar).get("backbone_sha256") if sidecar.is_file() else None
    except FileFormatError:
        return f"has a damaged record beside it ({sidecar.name})"
    if recorded:
        return None if io.sha256_of(path) == recorded else "differs from the file written (its SHA-256 changed)"
    try:
        io.load_torch(path)
    except UntrustedFileError:
        return "holds a pickle that would run code (it was not read)"
    except DwltError:
        return "cannot be read as a weights-only state dict"
    return None


def prepared(profile: Profile, pretraining: str, eps_255: float, roots: Roots) -> bool:
    """Whether the source's file is there and verifies."""
    return source_problem(profile, pretraining, eps_255, roots) is None


def source_problem(profile: Profile, pretraining: str, eps_255: float, roots: Roots) -> str | None:
    """None when the source is prepared and its file verifies, else a phrase saying what is wrong and what to do."""
    where = roots.source(profile.name, pretraining, eps_255)
    if where.is_file():
        damage = _damage(where)
        return (
            f"the dense {source_key(pretraining, eps_255)} source {where} {damage}: {_remedy(profile)}"
            if damage
            else None
        )
    if profile.pretrains_sources:
        how = f"run notebooks/01_load_pretrained.ipynb with {profile.flag} (it pre-trains the {profile.name} sources)"
    else:
        src = get_source(pretraining, source_eps_255(pretraining, eps_255))
        how = (
            f"run notebooks/01_load_pretrained.ipynb, which converts {src.filename} from {roots.weights_dir}/ "
            f"(get it from {src.url or src.page})"
        )
    return f"the dense {source_key(pretraining, eps_255)} source is not in {where}: {how}"


def load(profile: Profile, pretraining: str, eps_255: float, roots: Roots) -> dict[str, torch.Tensor]:
    """θ_p of one pre-training as a backbone state dict."""
    problem = source_problem(profile, pretraining, eps_255, roots)
    if problem:
        raise MissingInputError(sentence(problem))
    return io.load_torch(roots.source(profile.name, pretraining, eps_255))


def _previous(profile: Profile, pretraining: str, eps_255: float, roots: Roots) -> dict | None:
    """The record of a prepared source, or None when it has to be made (again: a damaged file is replaced)."""
    target = roots.source(profile.name, pretraining, eps_255)
    if prepared(profile, pretraining, eps_255, roots):
        return io.read_json(paths.sidecar_file(target), remedy=_remedy(profile))
    if target.exists():
        print(f"{target} {_damage(target)}: it is made again", flush=True)
    return None


def check_sources(pretrainings: list, eps_255: float, profile: Profile) -> list[str]:
    """Validate notebook 01's choice of sources; returns them."""
    if not isinstance(pretrainings, (list, tuple)) or not pretrainings:
        raise InputError(f"pretrainings is a non-empty list such as {list(PRETRAININGS)}; got {pretrainings!r}.")
    for pretraining in pretrainings:
        check_choice("pre-training", pretraining, PRETRAININGS)
        profile.check_source_eps(pretraining, eps_255)
        if not profile.pretrains_sources:
            get_source(pretraining, source_eps_255(pretraining, eps_255))  # raises when none is published
    return list(pretrainings)


def prepare(
    session: Session,
    pretraining: str,
    eps_255: float,
    *,
    trust: bool = False,
    download: bool = True,
    imagenet_root: Path | None = None,
    imagenet_images: int = 2000,
) -> dict:
    """Make one source ready for notebooks 02-05 (a prepared one is read back); returns its record, with the
    ImageNet top-1 of a published source measured when `imagenet_root` is given."""
    if session.profile.pretrains_sources:
        return pretrain(session, pretraining)
    meta = convert_published(
        session.profile,
        pretraining,
        eps_255,
        session.roots,
        trust=trust,
        download=download,
        progress=session.progress == "bar",
    )
    if imagenet_root:
        backbone = session.roots.source(session.profile.name, pretraining, eps_255)
        arch = get_source(pretraining, source_eps_255(pretraining, eps_255)).arch
        top1 = imagenet_top1(backbone, arch, imagenet_root, imagenet_images, session.precision)
        # On record beside the converted weights, so a later reader sees what the source scored.
        sidecar = paths.sidecar_file(backbone)
        meta = {**io.read_json(sidecar), "imagenet_top1_subset": top1, "imagenet_top1_images": imagenet_images}
        io.write_json(sidecar, meta)
    return meta


def convert_published(
    profile: Profile,
    pretraining: str,
    eps_255: float,
    roots: Roots,
    *,
    trust: bool = False,
    download: bool = True,
    progress: bool = True,
) -> dict:
    """Convert a published checkpoint from `weights_dir` (downloaded there first when possible, with a
    progress bar when `progress`) into a state dict of the source's architecture that loads strictly; returns
    the record of the file."""
    eps_255 = source_eps_255(pretraining, eps_255)
    src = get_source(pretraining, eps_255)
    target = roots.source(profile.name, pretraining, eps_255)
    previous = _previous(profile, pretraining, eps_255, roots)
    if previous is not None:
        return previous
    original = roots.weights_dir / src.filename
    if not original.is_file():
        _download_weights(src, original, download, progress)
    checked_against = _verify_hash(src, original, roots.weights_dir)
    # A file the user registered by its hash is one they vouch for, like trust=True.
    user_registered = checked_against == str(paths.checksums_file(roots.weights_dir))
    backbone, meta = load_pretrained_backbone(src.arch, original, trust=trust or user_registered)
    meta["sha256_checked_against"] = checked_against
    meta.update(
        registry={
            "name": src.name,
            "variant": src.variant,
            "citation": src.citation,
            "published_sha256": src.sha256,
            "imagenet_top1": src.imagenet_top1,
        }
    )
    save_backbone_state(target, backbone.state_dict(), meta)
    return meta


def _verify_hash(src: PretrainedSource, original: Path, weights_dir: Path) -> str | None:
    """Check a checkpoint against the SHA-256 registered for it, before anything of it is unpickled: the one
    in the user's SHA256SUMS when it lists the file, else the published one. Returns what it was checked
    against (None: nothing is registered for it); a mismatch is an error naming the file."""
    sums_file = paths.checksums_file(weights_dir)
    user = read_checksums(sums_file).get(src.filename)
    expected, where = (user, str(sums_file)) if user else (src.sha256, "published hash")
    if expected is None:
        return None
    actual = io.sha256_of(original)
    if actual != expected:
        override = "" if user else f", or list its SHA-256 in {sums_file} if it is deliberately another file"
        raise FileFormatError(
            f"{original} has SHA-256 {actual}, not the {expected} registered for it ({where}): it is damaged or "
            f"another file; copy or download it again from {src.url or src.page}{override}."
        )
    if user and src.sha256 and user != src.sha256:
        warnings.warn(
            f"{original} differs from the published {src.filename} (SHA-256 {actual} instead of {src.sha256}, "
            f"registered in {sums_file}); its results are not comparable with the paper's.",
            stacklevel=3,
        )
    return where


def _download_weights(src: PretrainedSource, destination: Path, download: bool, progress: bool) -> None:
    hint = f"put {src.filename} in {destination.parent}/ (it is published at {src.url or src.page})"
    if not download or src.url is None:
        reason = "it has no direct download link" if src.url is None else "download is off"
        raise MissingInputError(
            f"The {src.name} weights {src.filename} are not in {destination.parent} and {reason}: {hint}."
        )
    problem = io.unreachable(src.url)
    if problem:
        raise MissingInputError(
            f"The {src.name} weights {src.filename} are not in {destination.parent} and "
            f"cannot be downloaded ({problem}): {hint}."
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {src.filename} from {src.url} to {destination.parent}/", flush=True)
    download_url_to_file(src.url, str(destination), progress=progress)
    io.follow_umask(destination)  # torch.hub keeps its temporary file's private mode


def imagenet_top1(
    backbone_path: Path, arch: str, imagenet_root: Path, images: int, precision: Precision, *, seed: int = 0
) -> float:
    """Clean top-1 (%) of a converted ImageNet backbone of architecture `arch` on a class-stratified subset of
    the validation set."""
    val = imagenet_folder(imagenet_root, "val")
    positions = subset_positions(torch.tensor(val.targets), min(images / len(val), 1.0), "stratified", seed)
    backbone = backbone_holding(arch, io.load_torch(backbone_path, remedy="convert it again with notebook 01"))
    model = with_normalization(backbone, IMAGENET_MEAN, IMAGENET_STD)
    precision.prepare(model).eval()
    batches = FolderBatches(None, Subset(val, positions.tolist()), precision.device)
    return evaluate(model, batches, precision=precision)["SA"]


def pretrain(session: Session, pretraining: str) -> dict:
    """Pre-train one source of a profile that makes its own (clean, FGSM-RS or PGD on its stand-in source
    data set, at the profile's ε); returns its record (recipe, test SA and RA). A trained one is read back."""
    check_choice("pre-training", pretraining, PRETRAININGS)
    profile, roots = session.profile, session.roots
    eps = source_eps_255(pretraining, profile.source_eps_255)
    target = roots.source(profile.name, pretraining, eps)
    previous = _previous(profile, pretraining, eps, roots)
    if previous is not None:
        return previous
    splits = load_splits(profile.source_dataset, roots.data_root)
    train = splits.train.take(torch.arange(profile.source_images))
    torch.manual_seed(session.seed)
    model = build_model(profile.arch, splits.info.num_classes, splits.info.mean, splits.info.std)
    precision = session.precision
    recipe = profile.pretrain[pretraining]
    fit(
        model,
        ArrayBatches(train, profile.source_transforms, precision.device),
        None,
        recipe,
        roots.source_training_dir(profile.name, pretraining, eps),
        seed=session.seed,
        precision=precision,
        progress=session.progress,
        label=f"{source_key(pretraining, eps)} source",
    )
    attack = AttackSpec(eps_255=profile.source_eps_255, alpha_255=profile.source_eps_255 / 4, steps=20)
    test = ArrayBatches(
        splits.test.take(torch.arange(PRETRAINED_TEST_IMAGES)), profile.source_transforms, precision.device
    )
    scores = evaluate(model.eval(), test, attack=attack, precision=precision, batch_size=500)
    meta = {
        "profile": profile.name,
        "pretraining": pretraining,
        "dataset": profile.source_dataset,
        "train_images": profile.source_images,
        "recipe": dataclasses.asdict(recipe),
        "seed": session.seed,
        "test_images": PRETRAINED_TEST_IMAGES,
        "test_SA": scores["SA"],
        "test_RA": scores["RA"],
        "RA_attack": attack.describe(),
    }
    save_backbone_state(target, model.model.state_dict(), meta)
    return meta


def _checked_against(meta: dict, registry: dict) -> str:
    """Which registered SHA-256 a converted checkpoint was verified against, for the sources table."""
    where = meta.get("sha256_checked_against")
    if where is None:
        return "nothing (no hash is published or listed in SHA256SUMS)"
    if where == "published hash":
        return where
    published = registry.get("published_sha256")
    if not published:
        return f"{Path(where).name} (no published hash)"
    return f"{Path(where).name} ({'equal to' if meta['sha256'] == published else 'differs from'} the published one)"


def summary(profile: Profile, pretraining: str, meta: dict) -> dict:
    """One display row for a prepared source."""
    row = {"pre-training": pretraining}
    if profile.pretrains_sources:
        row.update(
            {
                "trained on": f"{meta['train_images']:,} {meta['dataset']} images",
                "test SA (%)": round(meta["test_SA"], 2),
                "test RA (%)": round(meta["test_RA"], 2),
                "RA attack": meta["RA_attack"],
            }
        )
    else:
        registry = meta.get("registry", {})
        row.update(
            {
                "variant": registry.get("variant"),
                "file": Path(meta["file"]).name,
                "layout": meta["layout"],
                "SHA-256": meta["sha256"],
                "checked against": _checked_against(meta, registry),
                "published ImageNet top-1": registry.get("imagenet_top1"),
                "measured top-1 (val subset)": meta.get("imagenet_top1_subset"),
            }
        )
    return row
