"""The inputs of the paper-profile rehearsal, in their genuine on-disk formats and real sizes: CIFAR-10/100
python batches and SVHN .mat files holding exactly the images the official splits need, an ImageNet-layout
folder of JPEGs, and the three pre-trained sources in their published layouts, holding random ResNet-50
weights and registered by their SHA-256 the way a user registers files they vouch for."""

from __future__ import annotations

from pathlib import Path

import dill
import torch
from torchvision.models import resnet50

from dwlt_utils import paths
from dwlt_utils.checkpoints import get_source
from dwlt_utils.io import sha256_of

from genuine_files import robustness_checkpoint, wong_checkpoint, write_cifar, write_imagenet, write_svhn

# Images per file of the official releases.
CIFAR_PER_BATCH, CIFAR_TEST = 10_000, 10_000
SVHN_TRAIN, SVHN_TEST = 73_257, 26_032
IMAGENET_CLASSES, IMAGENET_TRAIN_PER_CLASS, IMAGENET_VAL_PER_CLASS = 4, 3, 2
EPS_255 = 4  # the robust sources' ε (the protocol's default choice)


def write_data(root: Path) -> Path:
    for name in ("cifar10", "cifar100"):
        write_cifar(root, name, per_batch=CIFAR_PER_BATCH, n_test=CIFAR_TEST)
    write_svhn(root, SVHN_TRAIN, SVHN_TEST)
    return root


def write_weights(folder: Path) -> dict[str, Path]:
    """One checkpoint per pre-training, in the layout its authors publish, listed in the folder's SHA256SUMS."""
    folder.mkdir(parents=True, exist_ok=True)
    layouts = {
        "standard": (lambda w: w, {}),  # torchvision: a plain state dict
        "fast_adv": (wong_checkpoint, {}),  # Wong et al.: DataParallel keys beside the training state
        "adv": (robustness_checkpoint, {"pickle_module": dill}),  # Salman et al.: a robustness-library dill pickle
    }
    files = {}
    for seed, (pretraining, (layout, save_options)) in enumerate(layouts.items()):
        torch.manual_seed(seed)
        source = get_source(pretraining, None if pretraining == "standard" else EPS_255)
        files[pretraining] = folder / source.filename
        torch.save(layout(resnet50().state_dict()), files[pretraining], **save_options)
    paths.checksums_file(folder).write_text("".join(f"{sha256_of(f)}  {f.name}\n" for f in files.values()))
    return files


def write_inputs(root: Path) -> dict[str, Path]:
    """Every input under `root`: data/, imagenet/, weights/."""
    write_data(root / "data")
    write_imagenet(root / "imagenet", IMAGENET_CLASSES, IMAGENET_TRAIN_PER_CLASS, IMAGENET_VAL_PER_CLASS)
    write_weights(root / "weights")
    return {name: root / name for name in ("data", "imagenet", "weights")}
