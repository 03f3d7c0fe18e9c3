"""Files in the genuine on-disk formats, written by the tests: data sets as their official releases store them
and pre-trained checkpoints in their published layouts.

Every written image carries its own index in its pixels (R at (0,0) = index % 256, R at (0,1) = index // 256,
wrapping above 65,535), plus fixed markers in the other channels and the second row, so a wrong split, order
or axis order shows.
"""

from __future__ import annotations

import argparse
import pickle
import struct
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image

from dwlt_utils.checkpoints import IMAGENET_MEAN as MEAN
from dwlt_utils.checkpoints import IMAGENET_STD as STD

G_MARK, B_MARK, ROW1_MARK = 7, 9, 5
TEST_OFFSET = 1000  # test images carry index + TEST_OFFSET, so a test image never passes for a training one


# ---- writers of the genuine formats


def _encoded_hwc(indices: np.ndarray, side: int = 32) -> np.ndarray:
    """N×side×side×3 uint8 images carrying their index and the markers."""
    images = np.zeros((len(indices), side, side, 3), np.uint8)
    images[:, 0, 0, 0] = indices % 256
    images[:, 0, 1, 0] = indices // 256
    images[:, 0, 0, 1] = G_MARK
    images[:, 0, 0, 2] = B_MARK
    images[:, 1, 0, 0] = ROW1_MARK
    return images


def decode(images: torch.Tensor) -> torch.Tensor:
    return images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()


def cifar_rows(indices: np.ndarray) -> np.ndarray:
    """CIFAR's row layout: 3,072 bytes per image, the 1,024 red values first, each channel row-major."""
    return _encoded_hwc(indices).transpose(0, 3, 1, 2).reshape(len(indices), 3072)


def dump_pickle(path: Path, obj, protocol: int = 2) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_cifar(root: Path, name: str, per_batch: int, n_test: int) -> Path:
    """cifar-10-batches-py (five batches) or cifar-100-python (one train file) as the official pickles."""
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for b in range(5):
            idx = np.arange(b * per_batch, (b + 1) * per_batch)
            batch = {
                "batch_label": f"training batch {b + 1} of 5",
                "labels": (idx % 10).tolist(),
                "data": cifar_rows(idx),
                "filenames": [f"img_{i}.png" for i in idx],
            }
            dump_pickle(folder / f"data_batch_{b + 1}", batch)
        idx = np.arange(n_test)
        dump_pickle(
            folder / "test_batch",
            {
                "batch_label": "testing batch 1 of 1",
                "labels": (idx % 10).tolist(),
                "data": cifar_rows(idx + TEST_OFFSET),
                "filenames": [],
            },
        )
        dump_pickle(
            folder / "batches.meta",
            {"num_cases_per_batch": per_batch, "num_vis": 3072, "label_names": [f"class{i}" for i in range(10)]},
        )
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for split, idx, offset in (("train", np.arange(5 * per_batch), 0), ("test", np.arange(n_test), TEST_OFFSET)):
            dump_pickle(
                folder / split,
                {
                    "batch_label": split,
                    "fine_labels": (idx % 100).tolist(),
                    "coarse_labels": (idx % 20).tolist(),
                    "data": cifar_rows(idx + offset),
                    "filenames": [],
                },
                protocol=pickle.DEFAULT_PROTOCOL,
            )
        dump_pickle(
            folder / "meta",
            {
                "fine_label_names": [f"fine{i}" for i in range(100)],
                "coarse_label_names": [f"coarse{i}" for i in range(20)],
            },
        )
    return folder


def write_svhn(root: Path, n_train: int, n_test: int) -> None:
    """train_32x32.mat / test_32x32.mat: X is 32×32×3×N uint8, y is N×1 with the digit 0 stored as 10."""
    root.mkdir(parents=True, exist_ok=True)
    for split, n, offset in (("train", n_train, 0), ("test", n_test, TEST_OFFSET)):
        idx = np.arange(n)
        digits = idx % 10
        scipy.io.savemat(
            root / f"{split}_32x32.mat",
            {
                "X": _encoded_hwc(idx + offset).transpose(1, 2, 3, 0).copy(),
                "y": np.where(digits == 0, 10, digits).astype(np.uint8)[:, None],
            },
        )


def _idx(images: np.ndarray | None = None, labels: np.ndarray | None = None) -> bytes:
    """The idx format: big-endian magic (0x0803 images / 0x0801 labels), dimensions, then uint8 values."""
    if images is not None:
        return struct.pack(">IIII", 0x803, *images.shape) + images.tobytes()
    return struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes()


def fashion_files(n_train: int, n_test: int) -> dict[str, bytes]:
    files = {}
    for prefix, n, offset in (("train", n_train, 0), ("t10k", n_test, TEST_OFFSET)):
        idx = np.arange(n)
        files[f"{prefix}-images-idx3-ubyte"] = _idx(images=_encoded_hwc(idx + offset, 28)[..., 0].copy())
        files[f"{prefix}-labels-idx1-ubyte"] = _idx(labels=idx % 10)
    return files


def write_fashion(root: Path, n_train: int, n_test: int) -> Path:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name, blob in fashion_files(n_train, n_test).items():
        (raw / name).write_bytes(blob)
    return raw


# ---- pre-trained checkpoints in their published layouts


def randomised(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Distinct random values in every tensor, so a key mix-up between same-shaped tensors cannot pass."""
    gen = torch.Generator().manual_seed(seed)
    return {
        k: torch.randint(1, 10_000, v.shape, generator=gen)
        if v.dtype == torch.long
        else torch.randn(v.shape, generator=gen)
        for k, v in state.items()
    }


# A schedule function as a training script defines it, in `__main__`: dill pickles it by value, so a file
# holding it loads in any process (one defined in this module would name this module).
_lr_lambda = eval("lambda epoch: 0.1 ** (epoch // 30)", {"__name__": "__main__"})


def robustness_checkpoint(weights: dict[str, torch.Tensor]) -> dict:
    """What the robustness library saves: AttackerModel under DataParallel, plus training state dill can pickle."""
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    model = {
        "module.normalizer.new_mean": mean,
        "module.normalizer.new_std": std,
        **{f"module.model.{k}": v for k, v in weights.items()},
        # AttackerModel.attacker holds the same modules, so the tensors are shared, as in the real files.
        **{f"module.attacker.model.{k}": v for k, v in weights.items()},
        "module.attacker.normalize.new_mean": mean,
        "module.attacker.normalize.new_std": std,
    }
    return {
        "model": model,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "schedule": {"lr_lambda": _lr_lambda},
        "args": argparse.Namespace(arch="resnet50", eps=4 / 255),
        "epoch": 90,
        "amp": None,
    }


def dataparallel(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"module.{k}": v for k, v in weights.items()}


def wong_checkpoint(weights: dict[str, torch.Tensor]) -> dict:
    """What Wong et al.'s ImageNet script saves: the DataParallel state dict beside its training state."""
    return {
        "epoch": 15,
        "arch": "resnet50",
        "state_dict": dataparallel(weights),
        "best_prec1": torch.tensor(60.9),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.4, "params": [0]}]},
    }


def write_imagenet(root: Path, classes: int, train_per_class: int, val_per_class: int, seed: int = 0) -> Path:
    """An ImageNet-layout folder: train/ and val/ with one folder of JPEGs per WordNet-style class id, the
    images of assorted sizes and aspect ratios so that the protocol's resizes and crops have work to do."""
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            wnid = f"n{1440764 + c:08d}"
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                height, width = (int(v) for v in rng.integers(160, 400, size=2))
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{c * per_class + i:08d}.JPEG"
                Image.fromarray(pixels).save(folder / name, format="JPEG", quality=90)
    return root
