"""VisDA-2017 (classification track) for standard transfer, read as the official code reads it.

The official code [code] (dataset.py: `VisDA17`, `visda_loader`; main_std_eval.py):
- its data folder holds `train/image_list.txt` with the synthetic renderings under `train/` (152,397 in the
  release) and `validation/image_list.txt` with the real photos under `validation/` (55,388); each line is
  `<relative path> <label>`, split on whitespace, labels 0..11 (`CLASSES`);
- train = every line of the training list, validation = every line of the validation list, and the test loader
  is the validation loader: the best checkpoint is chosen on the images it is tested on, and there is no
  held-out test set. `VisDA17`'s `portion` is left at 1.0 (every line);
- images are opened by PIL and converted to RGB; training takes RandomResizedCrop(224, scale=(0.75, 1.33)) +
  RandomHorizontalFlip, evaluation Resize((224, 224)) (both sides: the aspect ratio is not kept), then ToTensor
  and normalisation with ImageNet's mean and std.

dwlt's choices: the data lives in `<data root>/visda17/{train,validation}/`; the transforms stop at ToTensor
(the model normalises, with `MEAN`/`STD`); the lists are checked when read (format, labels, every listed image
present), so that a damaged copy fails at once in one sentence instead of in a loader worker hours later; blank
lines are skipped (the official code would fail on one when it is drawn). Nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torchvision import transforms

from .batches import FolderBatches, PilSamples
from .corruptions import stand_in_corruptions
from .data import DATASETS, DatasetInfo, DataSplits, dataset_info
from .errors import FileFormatError, MissingInputError, naming_os_errors

VISDA_FOLDER = "visda17"
SPLIT_FOLDERS = ("train", "validation")
IMAGE_LIST = "image_list.txt"
SOURCE = "http://ai.bu.edu/visda-2017/"
CLASSES = (
    "aeroplane",
    "bicycle",
    "bus",
    "car",
    "horse",
    "knife",
    "motorcycle",
    "person",
    "plant",
    "skateboard",
    "train",
    "truck",
)
RELEASE = DATASETS[VISDA_FOLDER]  # the release's image counts; ImageNet's normalisation, as the official code's
MEAN, STD = RELEASE.mean, RELEASE.std
SIZE = 224
TRAIN_IMAGES = RELEASE.train_size  # the release's training list (synthetic)
VALIDATION_IMAGES = RELEASE.val_size  # the release's validation list (real)
MISSING_NAMED = 5  # missing images quoted by name; the rest are counted

Samples = list[tuple[str, int]]  # (absolute image path, label)


@dataclass(frozen=True)
class VisdaSplits:
    """The official splits: train (synthetic) and validation (real); test is the validation list itself."""

    info: DatasetInfo
    train: Samples
    validation: Samples

    @property
    def test(self) -> Samples:
        """The official test set: the validation images, on which the best checkpoint is also chosen."""
        return self.validation


def visda_splits(data_root: str | Path) -> VisdaSplits:
    """Train and validation samples from `<data_root>/visda17/{train,validation}/image_list.txt`."""
    folder = Path(data_root) / VISDA_FOLDER
    train, validation = (read_image_list(folder / split) for split in SPLIT_FOLDERS)
    # The release's constants, with the sizes of the lists found (a partial copy is read as it is).
    info = replace(RELEASE, train_size=len(train), val_size=len(validation), test_size=len(validation))
    return VisdaSplits(info, train, validation)


def read_image_list(split_folder: Path) -> Samples:
    """(absolute path, label) of every line of `split_folder/image_list.txt`, in file order, after checking the
    lines' format and labels and that every listed image is there."""
    split_folder = Path(split_folder)
    list_file = split_folder / IMAGE_LIST
    if not list_file.is_file():
        raise MissingInputError(_missing_list(split_folder, list_file))
    with naming_os_errors(list_file, "read"):
        text = _read_text(list_file)
    base = os.path.abspath(split_folder)
    samples = [(os.path.join(base, path), label) for path, label in _parse(text, list_file)]
    if not samples:
        raise FileFormatError(f"{list_file} lists no images; each line should read `<relative path> <label>`.")
    _check_images_exist(base, [path for path, _ in samples], list_file)
    return samples


def _missing_list(split_folder: Path, list_file: Path) -> str:
    where = f"{list_file} not found" if split_folder.is_dir() else f"{split_folder} not found"
    return (
        f"VisDA-2017 {split_folder.name} images: {where}; put the {split_folder.name}/ folder of the VisDA-2017 "
        f"classification data ({SOURCE}), its {IMAGE_LIST} beside the images it lists, at {split_folder} (nothing "
        "is downloaded)."
    )


def _read_text(list_file: Path) -> str:
    try:
        return list_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise FileFormatError(f"{list_file} is not a text file of image paths and labels ({err}).") from None


def _parse(text: str, list_file: Path) -> Iterable[tuple[str, int]]:
    """(relative path, label) of each non-blank line, checked."""
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        label = _label(fields)
        if label is None:
            raise FileFormatError(
                f"{list_file} line {number} reads {line!r}; accepted: `<relative path> <label>`, the label an integer."
            )
        if not 0 <= label < len(CLASSES):
            raise FileFormatError(
                f"{list_file} line {number} reads {line!r}: label {label} is outside 0..{len(CLASSES) - 1}, the "
                f"{len(CLASSES)} VisDA-2017 classes."
            )
        yield fields[0], label


def _label(fields: list[str]) -> int | None:
    """The label of a line split into fields, or None when the line is not `<path> <label>`."""
    if len(fields) != 2:
        return None
    try:
        return int(fields[1])
    except ValueError:
        return None


def _check_images_exist(base: str, paths: Sequence[str], list_file: Path) -> None:
    # One listing of the folder answers for most of the ~200k paths at once (several times faster than a stat
    # per path); a path it does not hold (written another way, under a linked folder) is asked about on its own.
    with naming_os_errors(base, "list the files of"):
        present = _files_under(base)
    missing = [path for path in paths if path not in present and not os.path.isfile(path)]
    if missing:
        named = ", ".join(missing[:MISSING_NAMED]) + (", ..." if len(missing) > MISSING_NAMED else "")
        raise MissingInputError(
            f"{len(missing):,} of the {len(paths):,} images that {list_file} lists are missing: {named}; restore "
            f"them from the VisDA-2017 release ({SOURCE})."
        )


def _files_under(folder: str) -> set[str]:
    """The paths of the files under `folder`, without descending into linked folders."""
    files, folders = set(), [folder]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif entry.is_file():
                    files.add(entry.path)
    return files


def visda_transforms(train: bool) -> transforms.Compose:
    """The official per-image pipelines without normalisation (the model normalises)."""
    if train:
        # scale's upper bound above 1 is the official value: torchvision redraws a box that does not fit in the
        # image (any box larger than it), and when none of ten draws fits it falls back to a centre crop (the
        # whole image, or its largest centred box within the aspect ratios 3/4..4/3).
        steps = [transforms.RandomResizedCrop(size=SIZE, scale=(0.75, 1.33)), transforms.RandomHorizontalFlip()]
    else:
        steps = [transforms.Resize((SIZE, SIZE))]  # both sides: the aspect ratio is not kept
    return transforms.Compose([*steps, transforms.ToTensor()])


def visda_batches(
    train_samples: Sequence[tuple[str, int]] | None,
    eval_samples: Sequence[tuple[str, int]] | None,
    device: torch.device | str,
    workers: int | None = None,
) -> FolderBatches:
    """Batches of VisDA samples read by PIL in DataLoader workers with the official transforms (either set may
    be None when only the other is needed)."""
    train_set = PilSamples(train_samples, visda_transforms(train=True)) if train_samples is not None else None
    eval_set = PilSamples(eval_samples, visda_transforms(train=False)) if eval_samples is not None else None
    return FolderBatches(train_set, eval_set, torch.device(device), workers)


# The quick stand-in's other domain: digits' test images at the stand-in contrast corruption of severity 3.
SHIFT = ("contrast", 3)


def shifted_digits(digits: DataSplits) -> DataSplits:
    """The quick profile's stand-in for VisDA-2017: digits' training images (the domain trained on), validated
    and tested, as VisDA is, on one set: its test images at lower contrast (the other domain)."""
    shifted = stand_in_corruptions(digits.test, [SHIFT[0]])[SHIFT]
    return DataSplits(dataset_info("digits_shifted"), digits.train, shifted, shifted)
