"""The two profiles every notebook runs in: `paper` (the protocol) and `quick` (the same chain in CPU minutes).

The quick profile keeps every code path and every ratio it can, and changes what makes the paper's runs
long: a small ResNet (torchvision BasicBlocks of widths 8-64, ResNet-50's names, the 32 px stem) on 16 px
images, offline
data (Fashion-MNIST stands in for ImageNet, scikit-learn's digits for CIFAR-10), a slice of the source
data, and a few epochs. Its records say `profile = quick` and name the paper data set each stand-in
stands for, so they are never read as paper results.

| | paper | quick |
|---|---|---|
| model | ResNet-50, 224 px (RandomResizedCrop / Resize 256 + CenterCrop 224) | SmallResNet, 16 px (the same crops, scaled: 18 → 16) |
| source task | ImageNet-1k, published pre-trained weights | first 6,000 Fashion-MNIST images, pre-trained in notebook 01 |
| downstream | CIFAR-10, CIFAR-100, SVHN | digits for CIFAR-10 |
| IMP level | 30 epochs, batch 2048, lr 5e-4 | 1 epoch over 3,000 images, batch 128, lr 0.01 |
| standard transfer | 150 epochs, lr 1e-3, ×0.1 at 50 and 100 | 6 epochs, lr 0.1 (a small model from a small source needs it), ×0.1 at 2 and 4 |
| adversarial transfer | 100 epochs, PGD-10, lr 0.1, ×0.1 at 50 and 75, validation from epoch 45 | 6 epochs, PGD-10, lr 0.1, ×0.1 at 3 and 4, validation from epoch 3 |
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from .attacks import PGD3_IMP, AttackSpec
from .augment import PAPER_224, QUICK_16, Transforms
from .data import quick_stand_in
from .errors import InputError, check_choice
from .train import (
    ADV_TRANSFER_CIFAR,
    ADV_TRANSFER_SVHN,
    IMP_LEVEL_ADV,
    IMP_LEVEL_CLEAN,
    STD_TRANSFER,
    TrainConfig,
)

PRETRAININGS = ("standard", "fast_adv", "adv")
REGIMES = ("std", "adv")
IMP_VARIANTS = ("s-imp", "a-imp")
# Which IMP variant went with which pre-training is not known [choice]: clean IMP for the standard model,
# adversarial IMP for the two robust ones.
DEFAULT_IMP = {"standard": "s-imp", "fast_adv": "a-imp", "adv": "a-imp"}
PAPER_DATASETS = ("cifar10", "cifar100", "svhn")


@dataclass(frozen=True)
class Profile:
    name: str
    arch: str
    transforms: Transforms  # downstream input pipeline
    source_dataset: str  # "imagenet" (an image folder) or a data set of `data.DATASETS`
    source_transforms: Transforms | None  # for an in-memory source data set; None: ImageNet folder transforms
    source_images: int | None  # the first N source training images used (None: all)
    imp_images: int | None  # the first N source training images IMP trains on (None: all)
    levels: int  # default length of the IMP ladder
    recipes: Mapping[str, TrainConfig] = field(repr=False)
    pretrain: Mapping[str, TrainConfig] = field(default_factory=dict, repr=False)  # quick sources only
    eval_batch_size: int = 256

    def dataset(self, paper_name: str) -> str:
        """The data set actually used for a paper data set (its stand-in in the quick profile)."""
        check_choice("data set", paper_name, PAPER_DATASETS)
        return quick_stand_in(paper_name) if self.name == "quick" else paper_name

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
    arch="resnet50",
    transforms=PAPER_224,
    source_dataset="imagenet",
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
_QUICK_PRETRAIN = TrainConfig(epochs=4, batch_size=128, lr=0.05, weight_decay=5e-4, schedule="cosine",
                              val_from_epoch=-1, keep=())
QUICK_SOURCE_EPS_255 = 4  # the quick robust sources are trained at the default ε of the paper's
QUICK = Profile(
    name="quick",
    arch="small_resnet",
    transforms=QUICK_16,
    source_dataset="fashion_mnist",
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
        "fast_adv": replace(_QUICK_PRETRAIN, attack=AttackSpec(
            eps_255=QUICK_SOURCE_EPS_255, alpha_255=1.25 * QUICK_SOURCE_EPS_255, steps=1, bn_mode="train")),
        # PGD adversarial training (Salman et al. follow Madry et al.); three steps keep it CPU-sized.
        "adv": replace(_QUICK_PRETRAIN, attack=AttackSpec(
            eps_255=QUICK_SOURCE_EPS_255, alpha_255=2 * QUICK_SOURCE_EPS_255 / 3, steps=3, bn_mode="train")),
    },
    eval_batch_size=300,
)
PROFILES = {"paper": PAPER, "quick": QUICK}


def get_profile(quick: bool) -> Profile:
    if not isinstance(quick, bool):
        raise InputError(f"quick is True or False; got {quick!r}.")
    return QUICK if quick else PAPER

