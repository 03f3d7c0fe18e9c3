"""The words of the paper as dwlt spells them, each with what it means.

Parameters, records, file names and error messages all take their choices from here, so a name is
accepted, stored and explained the same way everywhere. Each vocabulary maps a name to its meaning;
iterating over one gives the names in their canonical order.
"""

from __future__ import annotations

PROFILES = {
    "paper": "the paper's protocol: ResNet-50 at 224 px, ImageNet sources, CIFAR-10/100 and SVHN",
    "quick": "the same chain in CPU minutes: a small ResNet on 16 px stand-in data sets, a few epochs",
}

PRECISIONS = {
    "auto": "bf16 autocast on a CUDA device, fp32 on a CPU",
    "bf16": "bf16 autocast (weights, optimiser and loss in fp32): the fast CUDA path",
    "fp32": "fp32 throughout, as the official code ran",
}

PRETRAININGS = {
    "standard": "ImageNet ResNet-50 trained on clean images (torchvision's V1 weights)",
    "fast_adv": "ImageNet ResNet-50 trained by FGSM with random start (Wong et al. 2020)",
    "adv": "ImageNet ResNet-50 trained by PGD adversarial training (Salman et al. 2020)",
}
# How figures and tables name the pre-trainings.
PRETRAINING_LABELS = {"standard": "standard", "fast_adv": "fast adversarial", "adv": "adversarial"}

REGIMES = {
    "std": "standard transfer: fine-tuning on clean images, tested for SA",
    "adv": "adversarial transfer: fine-tuning on PGD-10 examples, tested for SA and RA",
}

TICKETS = {
    "dense": "the pre-trained model itself, nothing pruned (sparsity 0): every cell's baseline",
    "imp": "an iterative magnitude pruning ticket of notebook 02, at a level of the ladder 1 - 0.8^k",
    "omp": "one-shot magnitude pruning of the pre-trained weights to the same sparsity",
    "random": "random pruning of the pre-trained weights to the same sparsity",
}

IMP_VARIANTS = {
    "s-imp": "IMP whose levels train on clean source images",
    "a-imp": "IMP whose levels train on PGD-3 adversarial source images",
}

ONE_SHOT_METHODS = {
    "magnitude": "the weights of smallest magnitude go, ranked over all the backbone's prunable weights together",
    "random": "weights drawn uniformly at random go",
}

SUBSETS = {
    "first": "the first N images of the training split in file order, as the official code takes them",
    "random": "N images of the training split drawn at random from the run's seed",
    "stratified": "N images of the training split with every class in its proportion, drawn from the seed",
}

# What standard transfer trains on in a data-limited cell (notebook 05's `std_data`).
STD_DATA = {
    "budget": "the same data budget as adversarial transfer (this project's choice)",
    "all": "all the training data whatever the budget, as the official code does (the full-data cell)",
}
STD_BUDGET_DEVIATION = "standard transfer on the data budget (the official code trains it on all the training data)"

# The official code's other input paths (PROTOCOL.md §7); the first of each is the protocol's.
RESOLUTIONS = {
    224: "the protocol: images resized to 224 px, θ_p's 7×7 stride-2 first conv and its max-pool",
    32: "the official 32 px variant (cifar10_3): native images, a fresh 3×3 stride-1 first conv, no max-pool",
}
TEST_TRANSFORMS = {
    "resize_crop": "the protocol: validation and test images resized to 256 px and centre-cropped to 224",
    "resize": "validation and test images resized to 224 px, nothing cropped (the official cifar10_2)",
}
RESOLUTION_32_DEVIATION = (
    "resolution 32 (the official 32 px variant): RandomCrop(32, padding 4) and flip, test images as they are, "
    "θ_p's first conv replaced by a fresh dense 3×3 stride-1 conv (the ticket's first-conv mask unused; the "
    "official code cannot apply a ticket there) and no max-pool; sparsity is the ticket's on θ_p's backbone"
)
TEST_RESIZE_DEVIATION = "test_transform resize: validation and test images resized to 224 px without the centre crop"

CHECKPOINTS = {
    "best_sa": "the epoch of best validation SA",
    "best_ra": "the epoch of best validation RA (adversarial transfer only)",
}

METRICS = {
    "SA": "standard accuracy: the percentage of clean test images classified correctly",
    "RA": "robust accuracy: the percentage of test images still classified correctly under the evaluation attack",
}

PAPER_DATASETS = {
    "cifar10": "CIFAR-10: 45,000 training, 5,000 validation and 10,000 test images of 10 classes",
    "cifar100": "CIFAR-100: the same split sizes, 100 classes",
    "svhn": "SVHN: 68,257 training, 5,000 validation and 26,032 test digits",
}
# Beyond the paper's tables, the official code transfers to VisDA-2017 (PROTOCOL.md §7).
EXTRA_DATASETS = {
    "visda17": "VisDA-2017 classification: 152,397 synthetic renderings to train on, 55,388 real images to "
    "validate and test on (one set, as in the official code), 12 classes; standard transfer only",
}
TRANSFER_DATASETS = {**PAPER_DATASETS, **EXTRA_DATASETS}
SELECTED_ON_TEST_DEVIATION = (
    "validated on its test images (VisDA-2017 has one set for both, as in the official code), so best_sa is "
    "chosen on the images it is tested on"
)
SOURCE_DATASET = "imagenet"
DATASET_LABELS = {
    "imagenet": "ImageNet",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "svhn": "SVHN",
    "visda17": "VisDA-2017",
}


def is_robust(pretraining: str) -> bool:
    """Whether a pre-training is adversarial, and so has an ε: the standard one is not and has none."""
    return pretraining != "standard"


def source_eps_255(pretraining: str, eps_255: float) -> float:
    """The ε (in 255ths) a source is identified by: 0 for the standard source whatever ε it was given."""
    return eps_255 if is_robust(pretraining) else 0


def source_key(pretraining: str, eps_255: float) -> str:
    """The name of one dense source: `standard`, or the pre-training and its ℓ∞ ε, e.g. `adv_linf4`."""
    return f"{pretraining}_linf{eps_255:g}" if is_robust(pretraining) else pretraining
