"""dwlt_utils.visda on a miniature VisDA-2017 folder written in the release's layout: `train/` and `validation/`,
each with one folder of JPEGs per class and an `image_list.txt` of `<relative path> <label>` lines."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from dwlt_utils import transfer
from dwlt_utils.data import DatasetInfo
from dwlt_utils.errors import FileFormatError, MissingInputError
from dwlt_utils.profiles import PAPER
from dwlt_utils.visda import (
    CLASSES,
    MEAN,
    STD,
    VISDA_FOLDER,
    read_image_list,
    visda_batches,
    visda_splits,
    visda_transforms,
)
from dwlt_utils.vocabulary import SELECTED_ON_TEST_DEVIATION

# (relative path, label, (width, height), PIL mode), in file order: labels out of order, sizes of assorted aspect
# ratios, a greyscale photo among the real ones.
TRAIN = [
    ("truck/src_1_000001.jpg", 11, (40, 30), "RGB"),
    ("aeroplane/src_1_000002.jpg", 0, (30, 50), "RGB"),
    ("bus/src_2_000003.jpg", 2, (64, 48), "RGB"),
    ("aeroplane/src_2_000004.jpg", 0, (50, 50), "RGB"),
]
VALIDATION = [
    ("car/car_000001.jpg", 3, (40, 30), "RGB"),
    ("horse/horse_000002.jpg", 4, (30, 50), "L"),
    ("person/person_000003.jpg", 7, (70, 25), "RGB"),
]
SPLITS = {"train": TRAIN, "validation": VALIDATION}


def write_split(folder: Path, lines: list[tuple[str, int, tuple[int, int], str]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for relative, _, (width, height), mode in lines:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(folder / relative, format="JPEG", quality=90)
    (folder / "image_list.txt").write_text("".join(f"{relative} {label}\n" for relative, label, _, _ in lines))


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    for seed, (split, lines) in enumerate(SPLITS.items()):
        write_split(tmp_path / VISDA_FOLDER / split, lines, seed)
    return tmp_path


def expected(root: Path, split: str) -> list[tuple[str, int]]:
    folder = os.path.abspath(root / VISDA_FOLDER / split)
    return [(os.path.join(folder, relative), label) for relative, label, _, _ in SPLITS[split]]


def split_folder(root: Path, split: str = "train") -> Path:
    return root / VISDA_FOLDER / split


def write_list(root: Path, text: str, split: str = "train") -> None:
    (split_folder(root, split) / "image_list.txt").write_text(text)


# ---- reading the lists


def test_each_list_is_read_in_file_order_as_absolute_paths_with_their_labels(data_root, monkeypatch):
    monkeypatch.chdir(data_root)
    for split in SPLITS:
        assert read_image_list(Path(VISDA_FOLDER) / split) == expected(data_root, split)


def test_the_test_set_is_the_validation_list_as_in_the_official_code(data_root):
    splits = visda_splits(data_root)
    assert splits.train == expected(data_root, "train")
    assert splits.validation == expected(data_root, "validation")
    assert splits.test is splits.validation


def test_info_counts_the_lists_with_imagenets_constants(data_root):
    info = visda_splits(data_root).info
    assert info == DatasetInfo("visda17", 12, MEAN, STD, 224, len(TRAIN), len(VALIDATION), len(VALIDATION), False)
    assert MEAN == (0.485, 0.456, 0.406) and STD == (0.229, 0.224, 0.225)
    assert len(CLASSES) == 12 and CLASSES[0] == "aeroplane" and CLASSES[11] == "truck"


def test_blank_lines_are_skipped(data_root):
    lines = (split_folder(data_root) / "image_list.txt").read_text().splitlines()
    write_list(data_root, "\n".join([lines[0], "", "   ", *lines[1:], "", ""]))
    assert read_image_list(split_folder(data_root)) == expected(data_root, "train")


def test_a_listed_path_written_another_way_is_still_found(data_root):
    relative, label, _, _ = TRAIN[0]
    write_list(data_root, f"./{relative} {label}\n")
    [(path, read_label)] = read_image_list(split_folder(data_root))
    assert Path(path).resolve() == (split_folder(data_root) / relative).resolve() and read_label == label


# ---- transforms and batches


def pil_rgb(path: str) -> Image.Image:
    return Image.open(path).convert("RGB")


def test_both_pipelines_give_3x224x224_floats_in_0_1_whatever_the_aspect_ratio(data_root):
    splits = visda_splits(data_root)
    torch.manual_seed(0)
    for train, samples in ((True, splits.train), (False, splits.validation)):
        for path, _ in samples:
            x = visda_transforms(train)(pil_rgb(path))
            assert x.dtype == torch.float32 and x.shape == (3, 224, 224), (train, path)
            assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_evaluation_resizes_both_sides_exactly_as_torchvision_on_pils_rgb(data_root):
    reference = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor()])
    for path, _ in visda_splits(data_root).validation:
        assert torch.equal(visda_transforms(train=False)(pil_rgb(path)), reference(pil_rgb(path))), path


def test_training_draws_the_official_crop_and_flip(data_root):
    def drawn(pipeline: transforms.Compose, image: Image.Image, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return pipeline(image)

    flip_and_tensor = [transforms.RandomHorizontalFlip(), transforms.ToTensor()]
    official = transforms.Compose([transforms.RandomResizedCrop(size=224, scale=(0.75, 1.33)), *flip_and_tensor])
    imagenets = transforms.Compose([transforms.RandomResizedCrop(224), *flip_and_tensor])
    image = pil_rgb(visda_splits(data_root).train[3][0])
    ours = [drawn(visda_transforms(train=True), image, seed) for seed in range(8)]
    assert all(torch.equal(x, drawn(official, image, seed)) for seed, x in enumerate(ours))
    assert not all(torch.equal(x, drawn(imagenets, image, seed)) for seed, x in enumerate(ours))


def test_folder_batches_serve_the_lists_images_and_labels(data_root):
    splits = visda_splits(data_root)
    batches = visda_batches(splits.train, splits.test, "cpu", workers=0)
    assert len(batches) == len(TRAIN)

    evaluated = list(batches.eval(batch_size=2))
    assert [tuple(x.shape) for x, _ in evaluated] == [(2, 3, 224, 224), (1, 3, 224, 224)]
    assert torch.cat([y for _, y in evaluated]).tolist() == [label for _, label in splits.validation]
    reference = torch.stack([visda_transforms(train=False)(pil_rgb(path)) for path, _ in splits.validation])
    assert torch.equal(torch.cat([x for x, _ in evaluated]), reference)

    trained = list(batches.train(batch_size=3, generator=torch.Generator().manual_seed(0)))
    assert [tuple(x.shape) for x, _ in trained] == [(3, 3, 224, 224), (1, 3, 224, 224)]
    assert sorted(torch.cat([y for _, y in trained]).tolist()) == sorted(label for _, label in splits.train)


def test_batches_of_one_split_alone(data_root):
    splits = visda_splits(data_root)
    batches = visda_batches(None, splits.validation, torch.device("cpu"), workers=0)
    assert len(batches) == len(VALIDATION) and batches.train_set is None


# ---- errors


def test_a_missing_data_folder_says_where_it_goes_and_where_it_comes_from(tmp_path):
    with pytest.raises(MissingInputError) as err:
        visda_splits(tmp_path)
    message = str(err.value)
    assert f"{tmp_path / VISDA_FOLDER / 'train'} not found" in message
    assert "http://ai.bu.edu/visda-2017/" in message and "nothing is downloaded" in message


def test_a_missing_image_list_is_named(data_root):
    (split_folder(data_root, "validation") / "image_list.txt").unlink()
    with pytest.raises(MissingInputError, match="http://ai.bu.edu/visda-2017/") as err:
        visda_splits(data_root)
    assert f"{split_folder(data_root, 'validation') / 'image_list.txt'} not found" in str(err.value)


@pytest.mark.parametrize(
    "line", ["aeroplane/src_1_000002.jpg", "aeroplane/src_1_000002.jpg zero", "aeroplane/src_1_000002.jpg 0 1"]
)
def test_a_malformed_line_is_quoted_with_its_number(data_root, line):
    write_list(data_root, f"truck/src_1_000001.jpg 11\n\n{line}\n")
    with pytest.raises(FileFormatError) as err:
        read_image_list(split_folder(data_root))
    assert f"line 3 reads {line!r}" in str(err.value) and "`<relative path> <label>`" in str(err.value)


@pytest.mark.parametrize("label", [12, -1])
def test_a_label_outside_the_12_classes_is_refused(data_root, label):
    write_list(data_root, f"truck/src_1_000001.jpg {label}\n")
    with pytest.raises(FileFormatError, match=rf"line 1 .* label {label} is outside 0\.\.11"):
        read_image_list(split_folder(data_root))


def test_missing_listed_images_are_counted_and_named(data_root):
    gone = [split_folder(data_root) / TRAIN[k][0] for k in (1, 3)]
    for path in gone:
        path.unlink()
    with pytest.raises(MissingInputError) as err:
        read_image_list(split_folder(data_root))
    message = str(err.value)
    assert f"2 of the {len(TRAIN)} images" in message
    assert all(os.path.abspath(path) in message for path in gone)
    assert os.path.abspath(split_folder(data_root) / TRAIN[0][0]) not in message


def test_many_missing_images_are_counted_and_the_first_few_named(data_root):
    write_list(data_root, "".join(f"aeroplane/gone_{k}.jpg 0\n" for k in range(8)))
    with pytest.raises(MissingInputError) as err:
        read_image_list(split_folder(data_root))
    message = str(err.value)
    assert "8 of the 8 images" in message and "gone_4.jpg, ..." in message and "gone_5.jpg" not in message


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_an_empty_list_is_refused(data_root, text):
    write_list(data_root, text)
    with pytest.raises(FileFormatError, match="lists no images"):
        read_image_list(split_folder(data_root))


def test_the_splits_are_frozen(data_root):
    with pytest.raises(dataclasses.FrozenInstanceError):
        visda_splits(data_root).train = []


def test_a_visda_cell_reads_the_folders_with_the_official_transforms_and_caps(data_root):
    config = transfer.TransferConfig.create(
        PAPER, "std", dict(pretraining="adv", dataset="visda17", ticket="dense", sparsity=0, val_images=2)
    )
    batches, trained_on = transfer.cell_batches(config, visda_splits(data_root), seed=1, device=torch.device("cpu"))
    assert trained_on == [0, 1, 2, 3]
    images, labels = next(batches["train"].train(4, torch.Generator().manual_seed(0)))
    assert images.shape == (4, 3, 224, 224) and sorted(labels.tolist()) == [0, 0, 2, 11]
    (val_images, val_labels), *_ = batches["val"].eval(8)
    assert val_labels.tolist() == [3, 4]  # the first val_images of the validation list
    assert [labels.tolist() for _, labels in batches["test"].eval(8)] == [[3, 4, 7]]  # the same list, uncapped
    assert SELECTED_ON_TEST_DEVIATION in config.deviations()
