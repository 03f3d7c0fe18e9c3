"""Data sets of the protocol (PROTOCOL.md sections 4 and 6) as whole uint8 arrays, plus ImageNet folders.

Small data sets are held whole in memory (later on the device) as uint8 N×3×H×W; augmentation and
normalisation happen later, batched on the device, so nothing here transforms a sample.

Files are read through torchvision's own dataset classes, in torchvision's on-disk layout under `root`:
`cifar-10-batches-py/`, `cifar-100-python/`, `train_32x32.mat` and `test_32x32.mat` (SVHN, directly in
`root`, as torchvision keeps them), `FashionMNIST/raw/`. Two of torchvision's checks are replaced:
- a missing file is one clear MissingInputError (nothing is downloaded unless `download=True`, and then only
  the missing files, after a quick check that the host answers);
- a file whose MD5 differs from the official release loads with a warning (its results are not comparable
  with the paper) instead of being refused; a CIFAR pickle that is not the verified official file is first
  read with a restricted unpickler, so that such a file can never run code.

Splits (PROTOCOL.md section 4): train = the first `train_size` images of the official training file in file
order, validation = the next `val_size`, test = the official test file. `indices` record each image's index
in the file split it came from, so a run can save which images it trained on.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import pickle
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import transforms
from torchvision.datasets import CIFAR10, CIFAR100, SVHN, FashionMNIST, ImageFolder
from torchvision.datasets.utils import check_integrity

from .errors import FileFormatError, InputError, MissingInputError, UntrustedFileError
from .io import atomic_write, unreachable
from .vocabulary import SUBSETS

# Debian's package dataset-fashion-mnist installs the four raw .gz files here; where it cannot be installed,
# `make install` downloads the official ones into the checkout's data/fashion-mnist (module constants, so
# tests can point them elsewhere).
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DOWNLOADED_FASHION_MNIST = Path(__file__).resolve().parent.parent / "data" / "fashion-mnist"
FASHION_MNIST_NAMES = [Path(gz).stem for gz, _ in FashionMNIST.resources]

REACHABILITY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class DatasetInfo:
    """Constants of one data set: per-channel mean/std of pixels in [0,1], and the protocol's split sizes."""

    name: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int
    train_size: int
    val_size: int
    test_size: int
    quick: bool


# The quick-profile constants were computed once over the train split (pixels /255, float64; std is the
# population std over all pixels, the way the CIFAR constants are defined): Fashion-MNIST over the first
# 55,000 images of Debian's copy of the official training file, digits over the first 1,197 images of
# scikit-learn's bundled set scaled as in `_read_digits`. tests/unit/test_data.py recomputes them.
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "cifar10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32, 45_000, 5_000, 10_000, False
        ),
        DatasetInfo(
            "cifar100", 100, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), 32, 45_000, 5_000, 10_000, False
        ),
        DatasetInfo("svhn", 10, (0.4377, 0.4438, 0.4728), (0.1201, 0.1231, 0.1052), 32, 68_257, 5_000, 26_032, False),
        DatasetInfo("fashion_mnist", 10, (0.2858,) * 3, (0.3529,) * 3, 28, 55_000, 5_000, 10_000, True),
        # digits has no official split: train = the first 1,197 of its 1,797 images, val = the next 300,
        # test = the last 300 (see `_read_digits`).
        DatasetInfo("digits", 10, (0.3064,) * 3, (0.3753,) * 3, 8, 1_197, 300, 300, True),
        # VisDA-2017's classification track (`visda`): image folders of every size, normalised as ImageNet; its
        # validation images are its test images too, as in the official code.
        DatasetInfo("visda17", 12, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224, 152_397, 55_388, 55_388, False),
        # Its quick stand-in: digits' training images, validated and tested on its test images shifted to
        # another domain (`visda.shifted_digits`).
        DatasetInfo("digits_shifted", 10, (0.3064,) * 3, (0.3753,) * 3, 8, 1_197, 300, 300, True),
    )
}


@dataclass(frozen=True)
class ImageArrays:
    """Images (uint8 N×3×H×W), labels (int64 N) and each image's index in the file split it came from."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor

    def __post_init__(self) -> None:
        n = len(self.labels)
        if (
            self.images.dtype != torch.uint8
            or self.images.dim() != 4
            or self.images.shape[1] != 3
            or self.labels.dtype != torch.int64
            or self.indices.dtype != torch.int64
            or not len(self.images) == n == len(self.indices)
        ):
            raise InputError(
                "ImageArrays needs uint8 images N×3×H×W with int64 labels and indices of the same length N, "
                f"not images {self.images.dtype} {tuple(self.images.shape)}, labels {self.labels.dtype} "
                f"{tuple(self.labels.shape)}, indices {self.indices.dtype} {tuple(self.indices.shape)}."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def first(self, n: int) -> ImageArrays:
        """The first n images (0: all of them)."""
        return self.take(torch.arange(min(n, len(self)))) if n else self

    def take(self, positions) -> ImageArrays:
        """The images at these positions (integers), in that order, with their `indices` kept."""
        pos = torch.as_tensor(positions, device=self.labels.device)
        if pos.numel() and (pos.dtype == torch.bool or pos.is_floating_point()):
            raise InputError(f"take() needs integer positions, not a {pos.dtype} tensor.")
        pos = pos.long()
        return ImageArrays(self.images[pos], self.labels[pos], self.indices[pos])

    def to(self, device: str | torch.device) -> ImageArrays:
        return ImageArrays(self.images.to(device), self.labels.to(device), self.indices.to(device))


@dataclass(frozen=True)
class DataSplits:
    """The protocol's three splits of one data set."""

    info: DatasetInfo
    train: ImageArrays
    val: ImageArrays
    test: ImageArrays


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise InputError(f"Unknown data set {name!r}; known: {', '.join(DATASETS)}.")
    return DATASETS[name]


def load_splits(name: str, root: str | Path, *, download: bool = False) -> DataSplits:
    """Train/val/test of a data set of `DATASETS`, read from `root` (layout: the module docstring).

    With download=False (the default) nothing is downloaded; with download=True only missing files are.
    """
    info = dataset_info(name)
    return _load_splits(info, Path(root), download, info.train_size, info.val_size)


def _load_splits(info: DatasetInfo, root: Path, download: bool, train_size: int, val_size: int) -> DataSplits:
    """`load_splits` with the split sizes as parameters, so that tests can use small files."""
    pool, test = _READERS[info.name](info, root, download)
    if len(pool) != train_size + val_size:
        raise FileFormatError(
            f"The {info.name} training file in {root} holds {len(pool):,} images, but the protocol's split needs "
            f"exactly {train_size + val_size:,} ({train_size:,} train + {val_size:,} validation)."
        )
    positions = torch.arange(len(pool))
    return DataSplits(info, pool.take(positions[:train_size]), pool.take(positions[train_size:]), test)


# ---- data-limited subsets (PROTOCOL.md section 6)


def subset_positions(labels: torch.Tensor, fraction: float, how: str = "first", seed: int = 0) -> torch.Tensor:
    """Sorted int64 positions of a data-limited subset of N = int(len(labels) × fraction) images.

    N is floored as the official code computes it (1% of 45,000 → 450, 10% of 68,257 → 6,825).
    how = "first": the first N (the official behaviour); "random": N drawn uniformly without replacement;
    "stratified": per class, proportional to the class's share, rounded by the largest-remainder rule: each
    class gets floor(N·n_c/len), the images left over go one each to the classes with the largest remainders
    (ties to the lower label); then, when N is at least the number of classes present, each present class
    still at 0 takes one image from the class holding the most (ties to the lower label). The images within
    a class are drawn at random. "random" and "stratified" depend only on `seed`.
    """
    if how not in SUBSETS:
        *others, last = map(repr, SUBSETS)
        raise InputError(f"Unknown subset choice {how!r}; use {', '.join(others)} or {last}.")
    labels = torch.as_tensor(labels).cpu()
    if not 0 < fraction <= 1:
        raise InputError(f"The data fraction must be in (0, 1], not {fraction!r}.")
    total = len(labels)
    n = int(total * fraction)
    if n == 0:
        raise InputError(f"A fraction of {fraction!r} of {total:,} images selects none; use at least 1/{total:,}.")
    generator = torch.Generator().manual_seed(seed)
    if how == "first":
        return torch.arange(n)
    if how == "random":
        return torch.randperm(total, generator=generator)[:n].sort().values
    classes, counts = torch.unique(labels, return_counts=True)
    chosen = []
    for label, k in zip(classes.tolist(), _stratified_counts(counts, n).tolist()):
        members = (labels == label).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(chosen).sort().values


MIN_TRAIN_IMAGES = 2  # BatchNorm cannot train on a batch of one image


def check_trainable(name: str, fraction: float, total: int, what: str) -> None:
    """Raise InputError when `fraction` of `total` training images (N floored, as `subset_positions` takes
    them) is too few for one training step; the sentence names the smallest fraction that trains."""
    n = int(total * fraction)
    if n >= MIN_TRAIN_IMAGES:
        return
    for decimals in range(4, 16):
        smallest = math.ceil(MIN_TRAIN_IMAGES / total * 10**decimals) / 10**decimals
        if int(total * smallest) >= MIN_TRAIN_IMAGES:
            break
    raise InputError(
        f"{name} {fraction:g} of the {total:,} {what} is {n} image{'' if n == 1 else 's'}, too few for one training "
        f"step (BatchNorm needs two images in a batch); the smallest {name} that trains is {smallest:g}."
    )


def _stratified_counts(counts: torch.Tensor, n: int) -> torch.Tensor:
    """How many images each class gets (the rounding rule of `subset_positions`), in integer arithmetic."""
    total = int(counts.sum())
    alloc = counts * n // total
    remainders = counts * n % total
    by_remainder = torch.argsort(-remainders, stable=True)
    alloc[by_remainder[: n - int(alloc.sum())]] += 1
    if n >= len(counts):
        for empty in (alloc == 0).nonzero().flatten().tolist():
            alloc[torch.argmax(alloc)] -= 1  # argmax gives the first maximum: the lower label
            alloc[empty] = 1
    return alloc


def limit_train(splits: DataSplits, fraction: float, how: str = "first", seed: int = 0) -> DataSplits:
    """`splits` with train cut to a data-limited subset; its `indices` tell which training images were kept."""
    positions = subset_positions(splits.train.labels, fraction, how, seed)
    return dataclasses.replace(splits, train=splits.train.take(positions))


# ---- ImageNet (source task of IMP)


def pil_transforms(px: int, train: bool) -> transforms.Compose:
    """The official per-sample PIL pipelines, without normalisation (the model normalises): at 224 px
    RandomResizedCrop(224) + flip for training, Resize(256) + CenterCrop(224) for evaluation; at 32 px
    RandomCrop(32, padding=4) + flip for training, nothing for evaluation; then ToTensor."""
    if px == 224:
        steps = (
            [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
            if train
            else [transforms.Resize(256), transforms.CenterCrop(224)]
        )
    elif px == 32:
        steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if train else []
    else:
        raise InputError(f"The protocol's pipelines are at 224 or 32 px, not {px!r}.")
    return transforms.Compose([*steps, transforms.ToTensor()])


IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1k's training set (ILSVRC-2012)


def imagenet_folder(root: str | Path, split: str) -> ImageFolder:
    """ImageFolder on `root/train` or `root/val` with the protocol's 224 px transforms (`pil_transforms`)."""
    if split not in ("train", "val"):
        raise InputError(f"The ImageNet split must be 'train' or 'val', not {split!r}.")
    folder = Path(root) / split
    try:
        return ImageFolder(str(folder), transform=pil_transforms(224, split == "train"))
    except FileNotFoundError as err:  # no folder, no class folders, or no images
        raise MissingInputError(
            f"ImageNet {split} images not found in {folder} (one sub-folder of images per class expected): {err}"
        ) from None


# ---- reading the files


def _require_files(folder: Path, names: list[str], *, what: str, source: str, url: str, download: bool) -> list[str]:
    """The files of `names` missing from `folder`; an error unless download=True and `url`'s host answers."""
    missing = [name for name in names if not (folder / name).is_file()]
    if missing and not download:
        raise MissingInputError(
            f"{what}: {', '.join(missing)} missing from {folder}; get them from {source}, or pass download=True."
        )
    if missing:
        problem = unreachable(url, REACHABILITY_TIMEOUT_S)
        if problem:
            raise MissingInputError(f"Cannot download {what}: {problem}; put {', '.join(missing)} in {folder} by hand.")
    return missing


def _warn_unofficial(what: str, folder: Path, names: list[str]) -> None:
    if names:
        warnings.warn(
            f"{', '.join(names)} in {folder} differ from the official {what} release (MD5 mismatch): results on "
            "them are not comparable with the paper's.",
            stacklevel=2,
        )


def _arrays(images_nchw: np.ndarray | torch.Tensor, labels) -> ImageArrays:
    images = torch.as_tensor(images_nchw)
    if images.shape[1] == 1:  # grayscale: the models take three channels
        images = images.expand(-1, 3, -1, -1)
    return ImageArrays(images.contiguous(), torch.as_tensor(labels, dtype=torch.int64), torch.arange(len(images)))


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _CifarUnpickler(pickle.Unpickler):
    """Builds only what a CIFAR batch holds: dicts, lists, str/bytes, ints and numpy arrays."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),  # numpy < 2 spelling (the official files)
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays in protocol-5 pickles
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise _ForbiddenGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def _load_cifar_pickle(path: Path, keys: tuple[str, ...]) -> dict:
    """A CIFAR pickle read without running code; `keys`: one of them must be in the dict."""
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="latin1").load()
    except _ForbiddenGlobal as err:
        raise UntrustedFileError(
            f"{path} is not the official CIFAR file and its pickle asks for {err}, which no CIFAR batch needs; "
            "it was not loaded."
        ) from None
    except Exception as err:  # a damaged pickle can fail in many ways; all mean the same to the user
        raise FileFormatError(f"{path} is not a readable CIFAR pickle ({type(err).__name__}: {err}).") from None
    if not isinstance(obj, dict) or not any(key in obj for key in keys):
        raise FileFormatError(f"{path} is not a CIFAR file: it holds no dict with {' or '.join(keys)}.")
    return obj


class _TrustedCifar:
    """Mixin over torchvision's CIFAR10/CIFAR100 replacing their MD5 check (see the module docstring)."""

    def _check_integrity(self) -> bool:
        folder = Path(self.root, self.base_folder)
        files = self.train_list if self.train else self.test_list
        if not all((folder / name).is_file() for name, _ in files):
            return False  # torchvision then downloads (only ever asked to when files are missing)
        unofficial = [name for name, md5 in files if not check_integrity(str(folder / name), md5)]
        for name in unofficial:  # before torchvision unpickles them without restriction
            _load_cifar_pickle(folder / name, ("labels", "fine_labels"))
        if not check_integrity(str(folder / self.meta["filename"]), self.meta["md5"]):
            unofficial.append(self.meta["filename"])
        _warn_unofficial(self.base_folder, folder, unofficial)
        return True

    def _load_meta(self) -> None:  # torchvision's refuses unofficial files and unpickles without restriction
        key = self.meta["key"]
        self.classes = _load_cifar_pickle(Path(self.root, self.base_folder, self.meta["filename"]), (key,))[key]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


class _Cifar10(_TrustedCifar, CIFAR10):
    pass


class _Cifar100(_TrustedCifar, CIFAR100):
    pass


class _SVHN(SVHN):
    """torchvision's SVHN with its MD5 check replaced by a warning (.mat files cannot run code)."""

    def _check_integrity(self) -> bool:
        path = Path(self.root, self.filename)
        if not path.is_file():
            return False
        if not check_integrity(str(path), self.file_md5):
            _warn_unofficial("SVHN", Path(self.root), [self.filename])
        return True


@dataclass(frozen=True)
class _Files:
    """Where a data set's files live, which they are, and where a person gets them."""

    folder: Path
    names: list[str]
    source: str
    url: str


def _cifar_class(info: DatasetInfo):
    return _Cifar10 if info.name == "cifar10" else _Cifar100


def _cifar_files(info: DatasetInfo, root: Path) -> _Files:
    cls = _cifar_class(info)
    names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return _Files(root / cls.base_folder, names, f"{cls.url} (unpacked into {root})", cls.url)


def _svhn_files(info: DatasetInfo, root: Path) -> _Files:
    names = [SVHN.split_list[split][1] for split in ("train", "test")]
    url = SVHN.split_list["train"][0]
    return _Files(root, names, url.rsplit("/", 1)[0] + "/", url)


def _fashion_mnist_files(info: DatasetInfo, root: Path) -> _Files:
    source = (
        f"Debian's package dataset-fashion-mnist, or put the .gz files of {FashionMNIST.mirrors[0]} in "
        f"{DOWNLOADED_FASHION_MNIST} (`make install` does either)"
    )
    url = FashionMNIST.mirrors[0] + FashionMNIST.resources[0][0]
    return _Files(root / "FashionMNIST" / "raw", FASHION_MNIST_NAMES, source, url)


def fashion_mnist_copy(name: str) -> Path | None:
    """The local .gz copy of Fashion-MNIST's raw file `name`: Debian's package's, else the downloaded one."""
    for folder in (DEBIAN_FASHION_MNIST, DOWNLOADED_FASHION_MNIST):
        if (folder / f"{name}.gz").is_file():
            return folder / f"{name}.gz"
    return None


def _missing_files(info: DatasetInfo, root: Path, download: bool) -> list[str]:
    files = _FILES[info.name](info, root)
    return _require_files(
        files.folder, files.names, what=info.name, source=files.source, url=files.url, download=download
    )


def ensure_available(name: str, root: str | Path, *, download: bool = False) -> None:
    """Raise the one-sentence MissingInputError that `load_splits` would, without reading anything: the
    files are there, or download=True and their host answers."""
    info = dataset_info(name)
    if name == "fashion_mnist" and all(fashion_mnist_copy(n) for n in FASHION_MNIST_NAMES):
        return
    if name in _FILES:
        _missing_files(info, Path(root), download)


def _read_cifar(info: DatasetInfo, root: Path, download: bool) -> tuple[ImageArrays, ImageArrays]:
    cls = _cifar_class(info)
    missing = _missing_files(info, root, download)
    train = cls(str(root), train=True, download=bool(missing))  # the archive brings every file
    test = cls(str(root), train=False)
    return tuple(_arrays(ds.data.transpose(0, 3, 1, 2), ds.targets) for ds in (train, test))  # HWC → CHW


def _read_svhn(info: DatasetInfo, root: Path, download: bool) -> tuple[ImageArrays, ImageArrays]:
    missing = _missing_files(info, root, download)
    train, test = (
        _SVHN(str(root), split, download=SVHN.split_list[split][1] in missing) for split in ("train", "test")
    )
    return tuple(_arrays(ds.data, ds.labels) for ds in (train, test))  # torchvision maps label 10 to 0


def _read_fashion_mnist(info: DatasetInfo, root: Path, download: bool) -> tuple[ImageArrays, ImageArrays]:
    files = _fashion_mnist_files(info, root)
    for name in files.names:
        copy = fashion_mnist_copy(name)
        if not (files.folder / name).is_file() and copy:
            # A local copy, not a download. Debian recompressed the files, so their .gz MD5s are not the
            # official ones and cannot be checked (the downloaded ones were checked when downloaded).
            with gzip.open(copy, "rb") as src:
                atomic_write(files.folder / name, lambda dst: shutil.copyfileobj(src, dst), "wb")
    missing = _missing_files(info, root, download)
    try:
        train, test = (FashionMNIST(str(root), train=is_train, download=bool(missing)) for is_train in (True, False))
    except (AssertionError, TypeError, ValueError, RuntimeError) as err:  # how torchvision's idx reader fails
        if missing:
            raise  # a failed download: torchvision's own error says what went wrong
        raise FileFormatError(
            f"{files.folder} holds a file that is not in the idx format ({type(err).__name__}: {err})."
        ) from None
    return tuple(_arrays(ds.data[:, None], ds.targets) for ds in (train, test))


def _read_digits(info: DatasetInfo, root: Path, download: bool) -> tuple[ImageArrays, ImageArrays]:
    """scikit-learn's bundled 8×8 digits (no files, nothing to download); values 0..16 scaled to 0..255.

    It has no official split: the first 1,497 images are the training pool (train + val) and the last 300 the
    test set; `indices` count through all 1,797, so the test images are 1,497..1,796.
    """
    from sklearn.datasets import load_digits  # imported here: only the quick profile needs it

    digits = load_digits()
    all_images = _arrays(np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None], digits.target)
    pool = info.train_size + info.val_size
    return all_images.take(torch.arange(pool)), all_images.take(torch.arange(pool, len(all_images)))


_FILES = {"cifar10": _cifar_files, "cifar100": _cifar_files, "svhn": _svhn_files, "fashion_mnist": _fashion_mnist_files}
_READERS = {
    "cifar10": _read_cifar,
    "cifar100": _read_cifar,
    "svhn": _read_svhn,
    "fashion_mnist": _read_fashion_mnist,
    "digits": _read_digits,
}
