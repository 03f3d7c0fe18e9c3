"""CIFAR-10-C (Hendrycks & Dietterich 2019) as image arrays, one set per (corruption, severity), and the quick
profile's stand-in for it.

CIFAR-10-C is read from `<data_root>/CIFAR-10-C/`, the folder that CIFAR-10-C.tar (zenodo record 2535967)
extracts to: one `<corruption>.npy` per corruption, uint8 (5·10,000)×32×32×3 with severity s at rows
(s-1)·10,000 : s·10,000, and `labels.npy`, the CIFAR-10 test labels once per severity. Nothing is downloaded.
Files are read with `allow_pickle=False` and memory-mapped: checking them reads their headers and the labels
only, and each set is read from disk when it is asked for, so the 15 files of 150 MB are never held at once.

The quick profile has no CIFAR-10-C: `stand_in_corruptions` applies a few of the benchmark's corruptions,
re-implemented in a few lines each, to the test images of its stand-in data set. They are stand-ins, not
CIFAR-10-C, and their records say so (`STAND_IN_WORDS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import DATASETS, ImageArrays
from .errors import FileFormatError, InputError, MissingInputError, check_number, naming_os_errors, phrase

# The benchmark's 15 corruptions, in the published file names and the benchmark's order (noise, blur, weather,
# digital).
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
CIFAR10_C_FOLDER = "CIFAR-10-C"
CIFAR10_C_LABELS = "labels.npy"
CIFAR10_C_IMAGES_PER_SEVERITY = DATASETS["cifar10"].test_size  # the whole CIFAR-10 test set, once per severity
CIFAR10_C_URL = "https://zenodo.org/record/2535967"
CIFAR10_C_ARCHIVE = "CIFAR-10-C.tar"
CIFAR10_C_WORDS = "CIFAR-10-C"

_SIDE = DATASETS["cifar10"].native_size
_CLASSES = DATASETS["cifar10"].num_classes
_NPY_SIGNATURE = b"\x93NUMPY"


@dataclass(frozen=True, eq=False)
class CorruptedSets(Mapping[tuple[str, int], ImageArrays]):
    """One test set per (corruption, severity): `sets[("fog", 3)]` is an ImageArrays (uint8 N×3×H×W, int64
    labels, and `indices`, each image's index in the clean test set it was made from).

    A mapping whose keys run through `corruptions` in order, severities 1..5 within each. A set is made each time
    it is asked for (read from disk, or computed), so that only the sets in use are held: keep the one you use
    twice. `source` names what the sets are, in the words records use: "CIFAR-10-C", or `STAND_IN_WORDS`.
    """

    corruptions: tuple[str, ...]
    source: str
    make: Callable[[str, int, int], ImageArrays] = field(repr=False)  # (corruption, severity, first n; 0: all)

    @property
    def stand_in(self) -> bool:
        return self.source != CIFAR10_C_WORDS

    def __getitem__(self, key: tuple[str, int]) -> ImageArrays:
        if key not in self:
            raise KeyError(key)
        return self.make(*key, 0)

    def __contains__(self, key: object) -> bool:
        # Mapping's own would make the set to answer.
        return isinstance(key, tuple) and len(key) == 2 and key[0] in self.corruptions and key[1] in SEVERITIES

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return ((corruption, severity) for corruption in self.corruptions for severity in SEVERITIES)

    def __len__(self) -> int:
        return len(self.corruptions) * len(SEVERITIES)

    def sets(self, first: int = 0) -> Iterator[tuple[str, int, ImageArrays]]:
        """(corruption, severity, its ImageArrays) for every key in order, each made as the loop reaches it; with
        `first`, of each set's first images only (read no further from disk)."""
        for corruption, severity in self:
            yield corruption, severity, self.make(corruption, severity, first)

    # By identity: comparing by content would read every set.
    __eq__ = object.__eq__
    __hash__ = object.__hash__


def check_corruption_names(corruptions: Sequence[str], accepted: Sequence[str] = CORRUPTIONS) -> tuple[str, ...]:
    """The names as a tuple; InputError unless they are a non-empty list of distinct names of `accepted`."""
    names = (corruptions,) if isinstance(corruptions, str) else tuple(corruptions)
    unknown = [name for name in names if name not in accepted]
    if isinstance(corruptions, str) or not names or unknown or len(set(names)) != len(names):
        raise InputError(
            f"The corruptions must be a non-empty list of distinct names, not {corruptions!r}; accepted: "
            f"{', '.join(accepted)}."
        )
    return names


# ---- CIFAR-10-C


def load_cifar10_c(
    data_root: str | Path,
    corruptions: Sequence[str] = CORRUPTIONS,
    *,
    images_per_severity: int = CIFAR10_C_IMAGES_PER_SEVERITY,
) -> CorruptedSets:
    """CIFAR-10-C's sets of `corruptions` at every severity, from `<data_root>/CIFAR-10-C/`. Every file is checked
    first, reading the image files' headers and the labels, not the images: MissingInputError names every
    missing file, else FileFormatError every file of the wrong layout. Each set is read from disk when asked for.
    `images_per_severity` is not 10,000 only for small test files."""
    names = check_corruption_names(corruptions)
    folder = Path(data_root) / CIFAR10_C_FOLDER
    labels = torch.from_numpy(_checked_labels(folder, names, images_per_severity))
    indices = torch.arange(images_per_severity)

    def read(corruption: str, severity: int, first: int) -> ImageArrays:
        return _read_severity(folder / f"{corruption}.npy", severity, labels, indices, first)

    return CorruptedSets(names, CIFAR10_C_WORDS, read)


def _checked_labels(folder: Path, corruptions: tuple[str, ...], images_per_severity: int) -> np.ndarray:
    """The int64 labels of one severity, after every file has been checked (`load_cifar10_c`)."""
    check_number("images_per_severity", images_per_severity, 1, CIFAR10_C_IMAGES_PER_SEVERITY, integer=True)
    image_files = [f"{corruption}.npy" for corruption in corruptions]
    _require(folder, [*image_files, CIFAR10_C_LABELS])
    problems = []
    for name in image_files:
        try:
            _mapped_images(folder / name, images_per_severity)
        except _Unfit as unfit:
            problems.append(str(unfit))
    labels: np.ndarray | None = None
    try:
        labels = _labels(folder / CIFAR10_C_LABELS, images_per_severity)
    except _Unfit as unfit:
        problems.append(str(unfit))
    if problems:
        raise _format_error(folder, problems)
    return labels


def _require(folder: Path, names: list[str]) -> None:
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        absent = " (the folder does not exist)" if not folder.is_dir() else ""
        raise MissingInputError(
            f"CIFAR-10-C: {', '.join(missing)} missing from {folder}{absent}; download {CIFAR10_C_ARCHIVE} from "
            f"{CIFAR10_C_URL} and extract it into {folder.parent} (it unpacks into {CIFAR10_C_FOLDER}/); it is never "
            "downloaded automatically."
        )


class _Unfit(Exception):
    """A file not in the published layout: a phrase naming the file, what is wrong and what is accepted."""


def _format_error(folder: Path, problems: list[str]) -> FileFormatError:
    return FileFormatError(
        f"CIFAR-10-C in {folder} is not as published: {'; '.join(problems)}; extract {CIFAR10_C_ARCHIVE} from "
        f"{CIFAR10_C_URL} again."
    )


def _images_layout(images_per_severity: int) -> str:
    return f"a uint8 array of shape {_shape((len(SEVERITIES) * images_per_severity, _SIDE, _SIDE, 3))}"


def _labels_layout(images_per_severity: int) -> str:
    return (
        f"integer labels 0..{_CLASSES - 1} of shape {_shape((len(SEVERITIES) * images_per_severity,))}, the same "
        f"{images_per_severity:,} for each severity"
    )


def _shape(shape: tuple[int, ...]) -> str:
    return f"({', '.join(f'{side:,}' for side in shape)}{',' if len(shape) == 1 else ''})"


def _mapped(path: Path, layout: str) -> np.ndarray:
    """The array of a .npy file, memory-mapped: its header is read, its data only when sliced. Never unpickles:
    an array of Python objects cannot be memory-mapped."""
    with naming_os_errors(path, "read"):
        with open(path, "rb") as file:
            signature = file.read(len(_NPY_SIGNATURE))
        if signature != _NPY_SIGNATURE:
            raise _Unfit(f"{path.name} is not a .npy file (accepted: {layout})")
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, EOFError) as err:  # a damaged header, fewer bytes than announced, Python objects
            raise _Unfit(
                f"{path.name} is not a readable .npy array of numbers ({phrase(err)}) (accepted: {layout})"
            ) from None


def _mapped_images(path: Path, images_per_severity: int) -> np.ndarray:
    layout = _images_layout(images_per_severity)
    images = _mapped(path, layout)
    if images.dtype != np.uint8 or images.shape != (len(SEVERITIES) * images_per_severity, _SIDE, _SIDE, 3):
        raise _Unfit(f"{path.name} holds a {images.dtype} array of shape {_shape(images.shape)} (accepted: {layout})")
    return images


def _labels(path: Path, images_per_severity: int) -> np.ndarray:
    """The int64 labels of one severity, checked to be the same for every severity (as published)."""
    layout = _labels_layout(images_per_severity)
    mapped = _mapped(path, layout)
    integer = np.issubdtype(mapped.dtype, np.integer)
    if not integer or mapped.shape != (len(SEVERITIES) * images_per_severity,):
        raise _Unfit(f"{path.name} holds a {mapped.dtype} array of shape {_shape(mapped.shape)} (accepted: {layout})")
    labels = np.asarray(mapped, dtype=np.int64)
    outside = np.unique(labels[(labels < 0) | (labels >= _CLASSES)])
    if len(outside):
        shown = ", ".join(map(str, outside[:5])) + (", ..." if len(outside) > 5 else "")
        raise _Unfit(f"{path.name} holds labels outside 0..{_CLASSES - 1} ({shown}) (accepted: {layout})")
    per_severity = labels.reshape(len(SEVERITIES), images_per_severity)
    if not (per_severity == per_severity[0]).all():
        raise _Unfit(f"{path.name} holds different labels for different severities (accepted: {layout})")
    return per_severity[0].copy()


def _read_severity(path: Path, severity: int, labels: torch.Tensor, indices: torch.Tensor, first: int) -> ImageArrays:
    """One severity's rows of a corruption file as NCHW, its `first` only (0: all); the file is checked again, as
    it may have changed."""
    n = len(labels)
    try:
        mapped = _mapped_images(path, n)
    except _Unfit as unfit:
        raise _format_error(path.parent, [str(unfit)]) from None
    kept = min(first, n) if first else n
    rows = mapped[(severity - 1) * n : (severity - 1) * n + kept]
    images = torch.from_numpy(np.ascontiguousarray(rows.transpose(0, 3, 1, 2)))  # HWC → CHW, one copy
    return ImageArrays(images, labels[:kept], indices[:kept])


# ---- the quick profile's stand-in

STAND_IN_WORDS = "stand-in corruptions of the digits test images (not CIFAR-10-C)"
STAND_IN_SEED = 0  # of the Gaussian noise; the same draw at every severity, scaled by its sigma

# Severity 1..5 of each stand-in, on pixels in [0,1]. The numbers are make_cifar_c.py's for CIFAR-10-C, except
# pixelate's: its CIFAR fractions (0.95 .. 0.65 of 32 px) would leave an 8 px image unchanged or repeat sizes.
STAND_IN_SEVERITIES: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # standard deviation of the noise added to every pixel
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to the HSV value (V) of every pixel, clipped to 1
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on each channel's distance from that image's channel mean
    "pixelate": (0.875, 0.75, 0.625, 0.5, 0.375),  # side of the box-downsampled image, as a fraction of the side
}
STAND_IN_CORRUPTIONS = tuple(STAND_IN_SEVERITIES)


def stand_in_corruptions(test: ImageArrays, corruptions: Sequence[str] = STAND_IN_CORRUPTIONS) -> CorruptedSets:
    """Stand-ins for CIFAR-10-C on the quick profile's test images: not CIFAR-10-C, but a few of its corruptions
    (`STAND_IN_SEVERITIES`) applied to `test` at each severity, named like the benchmark's. Each set has
    `test`'s images in its order, labels and indices. Deterministic: the same images at every call, and no
    global random state is used or changed."""
    names = check_corruption_names(corruptions, STAND_IN_CORRUPTIONS)

    def corrupt(corruption: str, severity: int, first: int) -> ImageArrays:
        clean = test.images.float() / 255
        level = STAND_IN_SEVERITIES[corruption][severity - 1]
        corrupted = _STAND_INS[corruption](clean, level).clamp(0, 1)
        # The whole set is corrupted before the cut: the noise an image gets does not depend on the cut.
        return ImageArrays(torch.round(corrupted * 255).to(torch.uint8), test.labels, test.indices).first(first)

    return CorruptedSets(names, STAND_IN_WORDS, corrupt)


def _gaussian_noise(images: torch.Tensor, sigma: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(STAND_IN_SEED)
    noise = torch.randn(images.shape, generator=generator).to(images.device)
    return images + sigma * noise


def _brightness(images: torch.Tensor, shift: float) -> torch.Tensor:
    """The benchmark's shift of the HSV value, without a colour-space round trip: with hue and saturation kept,
    every channel scales with the value (its maximum); a black pixel has no saturation and becomes grey."""
    value = images.amax(dim=1, keepdim=True)
    shifted = (value + shift).clamp(0, 1)
    return torch.where(value > 0, images * shifted / value.clamp_min(1e-12), shifted)


def _contrast(images: torch.Tensor, factor: float) -> torch.Tensor:
    means = images.mean(dim=(2, 3), keepdim=True)
    return (images - means) * factor + means


def _pixelate(images: torch.Tensor, fraction: float) -> torch.Tensor:
    height, width = images.shape[2:]
    small = F.interpolate(images, size=(max(1, round(height * fraction)), max(1, round(width * fraction))), mode="area")
    return F.interpolate(small, size=(height, width), mode="nearest-exact")


_STAND_INS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "brightness": _brightness,
    "contrast": _contrast,
    "pixelate": _pixelate,
}
