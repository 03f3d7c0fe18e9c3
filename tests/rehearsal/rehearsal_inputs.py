"""The inputs of the paper-profile rehearsal, in their genuine on-disk formats and real sizes: CIFAR-10/100
python batches and SVHN .mat files holding exactly the images the official splits need, CIFAR-10-C's .npy
files at their published shapes, an ImageNet-layout folder of JPEGs, a miniature VisDA-2017 (image lists and
JPEGs), and the three pre-trained sources in their published layouts, holding random ResNet-50 weights and
registered by their SHA-256 the way a user registers files they vouch for."""

from __future__ import annotations

from pathlib import Path

import dill
import numpy as np
import torch
from PIL import Image
from torchvision.models import resnet50

from dwlt_utils import paths
from dwlt_utils.checkpoints import get_source
from dwlt_utils.corruptions import CIFAR10_C_FOLDER, CIFAR10_C_LABELS, CORRUPTIONS, SEVERITIES
from dwlt_utils.io import sha256_of
from dwlt_utils.visda import CLASSES as VISDA_CLASSES
from dwlt_utils.visda import IMAGE_LIST, VISDA_FOLDER

from genuine_files import (
    TEST_OFFSET,
    cifar_rows,
    robustness_checkpoint,
    wong_checkpoint,
    write_cifar,
    write_imagenet,
    write_svhn,
)

# Images per file of the official releases.
CIFAR_PER_BATCH, CIFAR_TEST = 10_000, 10_000
SVHN_TRAIN, SVHN_TEST = 73_257, 26_032
IMAGENET_CLASSES, IMAGENET_TRAIN_PER_CLASS, IMAGENET_VAL_PER_CLASS = 4, 3, 2
EPS_255 = 4  # the robust sources' ε (the protocol's default choice)
# CIFAR-10-C holds the 10,000 CIFAR-10 test images once per severity. The leading images of each severity are the
# test batch's own (their index in their pixels); the rest are never written: holes of the sparse file that read
# as zeros, so the 15 files of 150 MB take a few MB of disk.
CIFAR10_C_WRITTEN = 64
# VisDA-2017: (class, images) per split, a few small JPEGs each; the validation list is longer than the rehearsal's
# val_images, so that cap bites.
VISDA_TRAIN, VISDA_VALIDATION = ((0, 2), (3, 2), (7, 1), (11, 1)), ((0, 3), (3, 3), (7, 2), (11, 2))


def write_data(root: Path) -> Path:
    for name in ("cifar10", "cifar100"):
        write_cifar(root, name, per_batch=CIFAR_PER_BATCH, n_test=CIFAR_TEST)
    write_svhn(root, SVHN_TRAIN, SVHN_TEST)
    write_cifar10_c(root)
    write_visda(root)
    return root


def write_cifar10_c(root: Path) -> Path:
    """<root>/CIFAR-10-C/: a uint8 (5·10,000)×32×32×3 `<corruption>.npy` per corruption, severity s at rows
    (s-1)·10,000 : s·10,000, and uint8 `labels.npy`, the CIFAR-10 test labels (as `write_cifar` writes them) once
    per severity."""
    folder = root / CIFAR10_C_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    shown = np.arange(CIFAR10_C_WRITTEN)
    test_images = cifar_rows(shown + TEST_OFFSET).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW rows → HWC
    for corruption in CORRUPTIONS:
        shape = (len(SEVERITIES) * CIFAR_TEST, 32, 32, 3)
        # open_memmap writes the header and sizes the file without writing its data: a sparse file.
        images = np.lib.format.open_memmap(folder / f"{corruption}.npy", mode="w+", dtype=np.uint8, shape=shape)
        for severity in SEVERITIES:
            images[(severity - 1) * CIFAR_TEST + shown] = test_images
        images.flush()
        del images
    np.save(folder / CIFAR10_C_LABELS, np.tile(np.arange(CIFAR_TEST) % 10, len(SEVERITIES)).astype(np.uint8))
    return folder


def write_visda(root: Path) -> Path:
    """<root>/visda17/{train,validation}/: `<class>/<file>.jpg` images of assorted sizes and `image_list.txt`
    (`<relative path> <label>` lines) in the release's layout."""
    rng = np.random.default_rng(0)
    for split, counts in (("train", VISDA_TRAIN), ("validation", VISDA_VALIDATION)):
        folder = root / VISDA_FOLDER / split
        lines = []
        for label, count in counts:
            (folder / VISDA_CLASSES[label]).mkdir(parents=True, exist_ok=True)
            for k in range(count):
                relative = f"{VISDA_CLASSES[label]}/{split}_{label}_{k}.jpg"
                height, width = rng.integers(24, 72, size=2)
                Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / relative)
                lines.append(f"{relative} {label}\n")
        (folder / IMAGE_LIST).write_text("".join(lines))
    return root / VISDA_FOLDER


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
