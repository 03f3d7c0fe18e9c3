"""The two profiles every notebook runs in: `paper` (the protocol) and `quick` (the same chain in CPU minutes).

The quick profile keeps every code path and every ratio it can, and changes what makes the paper's runs
long: a small ResNet (torchvision BasicBlocks of widths 8-64, ResNet-50's names, the 32 px stem) on 16 px
images, offline data (Fashion-MNIST stands in for ImageNet, scikit-learn's digits for CIFAR-10), a slice of
the source data, and a few epochs. Its records say `profile = quick` and name the paper data set each
stand-in stands for, so they are never read as paper results.

| | paper | quick |
|---|---|---|
| model | ResNet-50, 224 px | SmallResNet, 16 px (the 224 px crops scaled: 18 → 16) |
| source task | ImageNet-1k, published pre-trained weights | 6,000 Fashion-MNIST images, pre-trained in 01 |
| downstream | CIFAR-10, CIFAR-100, SVHN | digits for CIFAR-10 |
| IMP level | 30 epochs, batch 2048, lr 5e-4 | 1 epoch over 3,000 images, batch 128, lr 0.01 |
| standard transfer | 150 epochs, lr 1e-3, ×0.1 at 50, 100 | 6 epochs, lr 0.1 (small model and source), ×0.1 at 2, 4 |
| adversarial transfer | 100 epochs, PGD-10, ×0.1 at 50, 75, validated from 45 | 6 epochs, ×0.1 at 3, 4, from 3 |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .attacks import PGD3_IMP, AttackSpec
from .augment import PAPER_32, PAPER_224, QUICK_8, QUICK_16, Transforms
from .errors import InputError, check_choice
from .models import Architecture, architecture
from .train import (
    ADV_TRANSFER_CIFAR,
    ADV_TRANSFER_SVHN,
    IMP_LEVEL_ADV,
    IMP_LEVEL_CLEAN,
    STD_TRANSFER,
    TrainConfig,
)
from .vocabulary import (
    DATASET_LABELS,
    EXTRA_DATASETS,
    IMP_VARIANTS,
    PAPER_DATASETS,
    REGIMES,
    SOURCE_DATASET,
    TRANSFER_DATASETS,
    is_robust,
)

# Which IMP variant went with which pre-training is not known [choice]: clean IMP for the standard model,
# adversarial IMP for the two robust ones.
DEFAULT_IMP = {"standard": "s-imp", "fast_adv": "a-imp", "adv": "a-imp"}


@dataclass(frozen=True)
class Profile:
    """Everything that differs between the paper and the quick profile; code outside this module asks a
    profile's fields, never its name."""

    name: str
    label: str  # how banners and figures name the profile's results
    flag: str  # the notebook parameters that select it, for the hints that tell a user what to run
    arch: str  # the name of its backbone's architecture in `models.ARCHITECTURES`
    transforms: Transforms  # downstream input pipeline
    transforms_32px: Transforms  # the official 32 px variant's pipeline, at this profile's scale
    paper_datasets: tuple[str, ...]  # the paper's downstream data sets this profile can run
    extra_datasets: tuple[str, ...]  # those of the official code beyond the paper's tables it can run
    stand_ins: Mapping[str, str]  # paper data set → the data set trained on in its place (none: itself)
    source_transforms: Transforms | None  # for an in-memory source data set; None: ImageNet folder transforms
    source_images: int | None  # the first N source training images used (None: all)
    imp_images: int | None  # the first N source training images IMP trains on (None: all)
    levels: int  # default length of the IMP ladder
    recipes: Mapping[str, TrainConfig] = field(repr=False)
    # The sources' pre-training recipes when this profile pre-trains them itself (notebook 01); empty: the
    # sources are the published checkpoints.
    pretrain: Mapping[str, TrainConfig] = field(default_factory=dict, repr=False)
    source_eps_255: int | None = None  # the one ε of the robust sources it pre-trains (None: published ones)
    eval_batch_size: int = 256
    autoattack_images: int = 1000  # the first N test images AutoAttack runs on (`eval_attack="autoattack"`)

    @property
    def source_dataset(self) -> str:
        """The data set the sources and IMP train on: ImageNet (an image folder) or its stand-in."""
        return self.stand_ins.get(SOURCE_DATASET, SOURCE_DATASET)

    @property
    def architecture(self) -> Architecture:
        return architecture(self.arch)

    @property
    def pretrains_sources(self) -> bool:
        return bool(self.pretrain)

    def dataset(self, paper_name: str) -> str:
        """The data set actually used for a paper data set (its stand-in, where the profile has one)."""
        check_choice("data set", paper_name, TRANSFER_DATASETS)
        if paper_name not in (*self.paper_datasets, *self.extra_datasets):
            offered = " and ".join(f"{DATASET_LABELS[p]} ({p!r} → {d!r})" for p, d in self.stand_ins.items())
            raise InputError(f"The {self.name} profile has stand-ins only for {offered}, not for {paper_name!r}.")
        return self.stand_ins.get(paper_name, paper_name)

    def coverage_note(self) -> str | None:
        """A sentence naming the paper data sets this profile cannot run (None: it runs them all)."""
        absent = [DATASET_LABELS[d] for d in PAPER_DATASETS if d not in self.paper_datasets]
        if not absent:
            return None
        present = " and ".join(DATASET_LABELS[d] for d in self.paper_datasets)
        used = ", ".join(self.stand_ins.get(d, d) for d in self.paper_datasets)
        return (
            f"The {self.name} profile has a stand-in for {present} only ({used}); {' and '.join(absent)} "
            "exist in the paper profile."
        )

    def check_source_eps(self, pretraining: str, eps_255: float) -> None:
        """Refuse a robust source's ε that this profile cannot have: the sources it pre-trains have one ε.
        (The published ones are checked against the registry of checkpoints.)"""
        if self.source_eps_255 is not None and is_robust(pretraining) and eps_255 != self.source_eps_255:
            raise InputError(
                f"The {self.name} profile pre-trains its robust sources at ε = {self.source_eps_255}/255 only; got "
                f"source_eps_255 {eps_255!r}."
            )

    def transfer_recipe(self, regime: str, paper_dataset: str) -> TrainConfig:
        check_choice("transfer regime", regime, REGIMES)
        if regime == "std":
            return self.recipes["std_transfer"]
        return self.recipes["adv_transfer_svhn" if paper_dataset == "svhn" else "adv_transfer"]

    def imp_recipe(self, variant: str) -> TrainConfig:
        check_choice("IMP variant", variant, IMP_VARIANTS)
        return self.recipes["imp_clean" if variant == "s-imp" else "imp_adv"]


PAPER = Profile(
    name="paper",
    label="paper profile",
    flag="",
    arch="resnet50",
    transforms=PAPER_224,
    transforms_32px=PAPER_32,
    paper_datasets=tuple(PAPER_DATASETS),
    extra_datasets=tuple(EXTRA_DATASETS),
    stand_ins={},
    source_transforms=None,
    source_images=None,
    imp_images=None,
    levels=19,
    recipes={
        "std_transfer": STD_TRANSFER,
        "adv_transfer": ADV_TRANSFER_CIFAR,
        "adv_transfer_svhn": ADV_TRANSFER_SVHN,
        "imp_clean": IMP_LEVEL_CLEAN,
        "imp_adv": IMP_LEVEL_ADV,
    },
    eval_batch_size=256,
)

_QUICK_IMP = replace(IMP_LEVEL_CLEAN, epochs=1, batch_size=128, lr=0.01)
_QUICK_PRETRAIN = TrainConfig(
    epochs=4, batch_size=128, lr=0.05, weight_decay=5e-4, schedule="cosine", val_from_epoch=-1, keep=()
)
_QUICK_SOURCE_EPS_255 = 4  # the quick robust sources are trained at the default ε of the paper's
QUICK = Profile(
    name="quick",
    label="QUICK PROFILE (stand-in data, small model: not paper results)",
    flag="-p quick True",
    arch="small_resnet",
    transforms=QUICK_16,
    transforms_32px=QUICK_8,
    paper_datasets=("cifar10",),
    extra_datasets=tuple(EXTRA_DATASETS),
    stand_ins={"imagenet": "fashion_mnist", "cifar10": "digits", "visda17": "digits_shifted"},
    source_transforms=QUICK_16,
    source_images=6000,
    imp_images=3000,
    levels=11,
    recipes={
        "std_transfer": replace(STD_TRANSFER, epochs=6, lr=0.1, milestones=(2, 4)),
        "adv_transfer": replace(ADV_TRANSFER_CIFAR, epochs=6, milestones=(3, 4), val_from_epoch=3),
        "adv_transfer_svhn": replace(ADV_TRANSFER_SVHN, epochs=6, val_from_epoch=0),
        "imp_clean": _QUICK_IMP,
        "imp_adv": replace(_QUICK_IMP, attack=PGD3_IMP),
    },
    pretrain={
        "standard": _QUICK_PRETRAIN,
        # FGSM with random start (Wong et al.): one step of 1.25 ε.
        "fast_adv": replace(
            _QUICK_PRETRAIN,
            attack=AttackSpec(
                eps_255=_QUICK_SOURCE_EPS_255, alpha_255=1.25 * _QUICK_SOURCE_EPS_255, steps=1, bn_mode="train"
            ),
        ),
        # PGD adversarial training (Salman et al. follow Madry et al.); three steps keep it CPU-sized.
        "adv": replace(
            _QUICK_PRETRAIN,
            attack=AttackSpec(
                eps_255=_QUICK_SOURCE_EPS_255, alpha_255=2 * _QUICK_SOURCE_EPS_255 / 3, steps=3, bn_mode="train"
            ),
        ),
    },
    source_eps_255=_QUICK_SOURCE_EPS_255,
    eval_batch_size=300,
    autoattack_images=20,
)
PROFILES = {profile.name: profile for profile in (PAPER, QUICK)}


def quick_parameter(profile: str) -> bool:
    """The notebooks' `quick` parameter that selects the profile named `profile` (`get_profile` read backwards)."""
    return profile != PAPER.name


def get_profile(quick: bool) -> Profile:
    if not isinstance(quick, bool):
        raise InputError(f"quick is True or False; got {quick!r}.")
    return QUICK if quick else PAPER
