"""dwlt_utils.corruptions: CIFAR-10-C read from small files written in the published layout (np.save of uint8
(5·n)×32×32×3 per corruption and of uint8 labels), and the quick profile's stand-in corruptions."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pytest
import torch

from dwlt_utils.corruptions import (
    CIFAR10_C_FOLDER,
    CIFAR10_C_URL,
    CORRUPTIONS,
    SEVERITIES,
    STAND_IN_CORRUPTIONS,
    STAND_IN_WORDS,
    load_cifar10_c,
    stand_in_corruptions,
)
from dwlt_utils.data import ImageArrays, load_splits
from dwlt_utils.errors import FileFormatError, InputError, MissingInputError

N = 4  # images per severity in the small files
PICKED = ["fog", "gaussian_noise"]  # not in the benchmark's order: the order asked for is kept
# Marks that tell where each pixel came from: (severity, image, corruption) in pixel (0, 0) of the file's
# HWC images, and two pixels that only the right HWC → CHW move puts at their place.
ROW1_MARK, COLUMN1_MARK = 201, 202


def file_images(corruption: str, n: int = N) -> np.ndarray:
    """A corruption file's images: uint8 (5·n)×32×32×3, each row marked with its severity, image and corruption."""
    images = np.zeros((len(SEVERITIES) * n, 32, 32, 3), np.uint8)
    for row in range(len(images)):
        images[row, 0, 0] = (row // n + 1, row % n, CORRUPTIONS.index(corruption))
    images[:, 1, 0, 0] = ROW1_MARK  # height 1, width 0, red
    images[:, 0, 1, 2] = COLUMN1_MARK  # height 0, width 1, blue
    return images


def clean_labels(n: int = N) -> np.ndarray:
    return (3 * np.arange(n) + 1) % 10


def write_cifar10_c(root: Path, corruptions=PICKED, n: int = N, labels_dtype=np.uint8) -> Path:
    """The published layout under root/CIFAR-10-C/, labels uint8 as published."""
    folder = root / CIFAR10_C_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for corruption in corruptions:
        np.save(folder / f"{corruption}.npy", file_images(corruption, n))
    np.save(folder / "labels.npy", np.tile(clean_labels(n), len(SEVERITIES)).astype(labels_dtype))
    return folder


def load_small(root: Path, corruptions=PICKED):
    return load_cifar10_c(root, corruptions, images_per_severity=N)


# ---- reading CIFAR-10-C


@pytest.mark.parametrize("labels_dtype", [np.uint8, np.int64])
def test_each_severity_comes_from_its_rows_as_nchw(tmp_path, labels_dtype):
    write_cifar10_c(tmp_path, labels_dtype=labels_dtype)
    sets = load_small(tmp_path)
    assert sets.source == "CIFAR-10-C" and not sets.stand_in
    assert list(sets) == [(corruption, severity) for corruption in PICKED for severity in SEVERITIES]
    assert len(sets) == 10 and ("fog", 5) in sets and ("fog", 6) not in sets and ("snow", 1) not in sets
    for corruption, severity, arrays in sets.sets():
        assert isinstance(arrays, ImageArrays)
        assert arrays.images.shape == (N, 3, 32, 32) and arrays.images.is_contiguous()
        assert torch.equal(arrays.images[:, 0, 0, 0], torch.full((N,), severity, dtype=torch.uint8))
        assert torch.equal(arrays.images[:, 1, 0, 0], torch.arange(N, dtype=torch.uint8))
        assert (arrays.images[:, 2, 0, 0] == CORRUPTIONS.index(corruption)).all()
        assert (arrays.images[:, 0, 1, 0] == ROW1_MARK).all() and (arrays.images[:, 2, 0, 1] == COLUMN1_MARK).all()
        assert torch.equal(arrays.labels, torch.as_tensor(clean_labels(), dtype=torch.int64))
        assert torch.equal(arrays.indices, torch.arange(N))
        assert torch.equal(sets[corruption, severity].images, arrays.images)  # the mapping gives the same set


def test_capped_sets_are_the_first_images_of_the_whole_and_read_no_further(tmp_path):
    write_cifar10_c(tmp_path)
    whole, capped = (list(load_small(tmp_path).sets(first)) for first in (0, 3))
    for (corruption, severity, every), (*key, first) in zip(whole, capped):
        assert key == [corruption, severity] and len(first) == 3
        for name in ("images", "labels", "indices"):
            assert torch.equal(getattr(first, name), getattr(every, name)[:3])
    # the copy to CHW is of the rows kept: the tensor owns 3 images' bytes, not the severity's
    assert first.images.untyped_storage().nbytes() == 3 * 3 * 32 * 32
    assert [len(arrays) for *_, arrays in load_small(tmp_path).sets(N + 5)] == [N] * 10  # a cap above N: all


def test_a_set_is_read_when_asked_for_and_checked_again(tmp_path):
    folder = write_cifar10_c(tmp_path)
    sets = load_small(tmp_path)
    np.save(folder / "fog.npy", file_images("fog")[:, :16])  # replaced after loading
    assert sets["gaussian_noise", 2].images.shape == (N, 3, 32, 32)
    with pytest.raises(FileFormatError, match=r"fog\.npy holds a uint8 array of shape \(20, 16, 32, 3\)"):
        sets["fog", 1]
    with pytest.raises(KeyError):
        sets["fog", 0]


def test_the_defaults_are_the_published_layout(tmp_path):
    write_cifar10_c(tmp_path, CORRUPTIONS)
    with pytest.raises(FileFormatError) as caught:
        load_cifar10_c(tmp_path)  # all 15 corruptions, 10,000 images per severity
    said = str(caught.value)
    for corruption in CORRUPTIONS:
        assert f"{corruption}.npy holds a uint8 array of shape (20, 32, 32, 3)" in said
    assert "accepted: a uint8 array of shape (50,000, 32, 32, 3)" in said
    assert "labels.npy holds a uint8 array of shape (20,)" in said
    assert ". " not in said and said.endswith(f"from {CIFAR10_C_URL} again.")  # one sentence
    assert len(load_cifar10_c(tmp_path, images_per_severity=N)) == 75


def test_loading_checks_published_files_and_reads_no_images(tmp_path, monkeypatch):
    write_cifar10_c(tmp_path)
    modes = []
    real_load = np.load

    def recording_load(*args, **kwargs):
        modes.append(kwargs.get("mmap_mode"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", recording_load)
    assert len(load_small(tmp_path)) == 10
    assert modes == ["r", "r", "r"]  # two corruption files and the labels, each memory-mapped


# ---- missing and damaged files


def test_missing_folder_names_every_file_and_where_to_get_them(tmp_path):
    with pytest.raises(MissingInputError) as caught:
        load_small(tmp_path)
    said = str(caught.value)
    for name in ("fog.npy", "gaussian_noise.npy", "labels.npy"):
        assert name in said
    assert str(tmp_path / CIFAR10_C_FOLDER) in said and "does not exist" in said
    assert CIFAR10_C_URL in said and "CIFAR-10-C.tar" in said


def test_a_missing_file_is_named_alone(tmp_path):
    folder = write_cifar10_c(tmp_path)
    (folder / "fog.npy").unlink()
    with pytest.raises(
        MissingInputError, match=r"CIFAR-10-C: fog\.npy missing from .*zenodo\.org/record/2535967"
    ) as caught:
        load_small(tmp_path)
    assert "gaussian_noise" not in str(caught.value) and "does not exist" not in str(caught.value)


@pytest.mark.parametrize(
    "images, wrong",
    [
        (file_images("fog")[:, :, :, :1], r"a uint8 array of shape \(20, 32, 32, 1\)"),
        (file_images("fog", N + 1), r"a uint8 array of shape \(25, 32, 32, 3\)"),
        (file_images("fog").astype(np.float32), r"a float32 array of shape \(20, 32, 32, 3\)"),
    ],
    ids=["channels", "rows", "dtype"],
)
def test_images_of_the_wrong_layout_are_refused(tmp_path, images, wrong):
    folder = write_cifar10_c(tmp_path)
    np.save(folder / "fog.npy", images)
    with pytest.raises(FileFormatError, match=rf"fog\.npy holds {wrong} \(accepted: a uint8 array of shape "):
        load_small(tmp_path)


@pytest.mark.parametrize(
    "labels, wrong",
    [
        (np.tile([0, 1, 12, 3], 5), r"labels outside 0\.\.9 \(12\)"),
        (np.tile([0, 1, -1, 3], 5), r"labels outside 0\.\.9 \(-1\)"),
        (np.arange(20) % 10, "different labels for different severities"),
        (np.tile(clean_labels(), 5).astype(np.float64), r"a float64 array of shape \(20,\)"),
        (np.tile(clean_labels(), 4), r"a int64 array of shape \(16,\)"),
    ],
    ids=["above", "negative", "per-severity", "float", "short"],
)
def test_labels_of_the_wrong_layout_are_refused(tmp_path, labels, wrong):
    folder = write_cifar10_c(tmp_path)
    np.save(folder / "labels.npy", labels)
    with pytest.raises(FileFormatError, match=rf"labels\.npy (holds )?{wrong}.*accepted: integer labels 0\.\.9"):
        load_small(tmp_path)


def test_several_damaged_files_in_one_sentence(tmp_path):
    folder = write_cifar10_c(tmp_path)
    np.save(folder / "fog.npy", file_images("fog").astype(np.int16))
    (folder / "labels.npy").write_bytes(b"<html>Not found</html>")
    with pytest.raises(FileFormatError) as caught:
        load_small(tmp_path)
    said = str(caught.value)
    assert "fog.npy holds a int16 array" in said and "labels.npy is not a .npy file" in said
    assert "gaussian_noise" not in said and said.endswith(f"from {CIFAR10_C_URL} again.")


def test_a_truncated_file_is_refused(tmp_path):
    folder = write_cifar10_c(tmp_path)
    whole = (folder / "gaussian_noise.npy").read_bytes()
    (folder / "gaussian_noise.npy").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(FileFormatError, match=r"gaussian_noise\.npy is not a readable \.npy array of numbers"):
        load_small(tmp_path)
    (folder / "gaussian_noise.npy").write_bytes(whole[:20])  # inside the header
    with pytest.raises(FileFormatError, match=r"gaussian_noise\.npy is not a readable \.npy array"):
        load_small(tmp_path)


def test_an_archive_is_not_a_npy_file(tmp_path):
    folder = write_cifar10_c(tmp_path)
    with open(folder / "fog.npy", "wb") as f:
        np.savez(f, images=file_images("fog"))
    with pytest.raises(FileFormatError, match=r"fog\.npy is not a \.npy file \(accepted: a uint8 array"):
        load_small(tmp_path)


def leave_mark(path: str) -> str:
    Path(path).write_text("unpickled")
    return "payload"


class Payload:
    """An object whose unpickling writes a file: proof of whether a pickle was run."""

    def __init__(self, mark: Path):
        self.mark = mark

    def __reduce__(self):
        return leave_mark, (str(self.mark),)


@pytest.mark.parametrize("name", ["fog.npy", "labels.npy"])
def test_a_pickled_object_array_is_refused_unrun(tmp_path, name):
    folder = write_cifar10_c(tmp_path)
    mark = tmp_path / "mark"
    np.save(folder / name, np.array([Payload(mark)] * 20, dtype=object), allow_pickle=True)
    with pytest.raises(FileFormatError, match=rf"{name} is not a readable \.npy array of numbers"):
        load_small(tmp_path)
    assert not mark.exists()
    np.load(folder / name, allow_pickle=True)  # the payload is live: unpickled, it leaves its mark
    assert mark.read_text() == "unpickled"


# ---- parameters


@pytest.mark.parametrize("corruptions", [["fog", "rain"], [], "fog", ["fog", "fog"], ["Gaussian Noise"]], ids=str)
def test_corruptions_must_be_distinct_benchmark_names(tmp_path, corruptions):
    write_cifar10_c(tmp_path)
    with pytest.raises(InputError, match="non-empty list of distinct names.*accepted: gaussian_noise, shot_noise"):
        load_cifar10_c(tmp_path, corruptions, images_per_severity=N)


@pytest.mark.parametrize("images_per_severity", [0, 2.5, 10_001])
def test_images_per_severity_is_checked(tmp_path, images_per_severity):
    write_cifar10_c(tmp_path)
    with pytest.raises(InputError, match="images_per_severity must be an integer in"):
        load_cifar10_c(tmp_path, PICKED, images_per_severity=images_per_severity)


# ---- stand-ins


@pytest.fixture(scope="module")
def digits_test() -> ImageArrays:
    return load_splits("digits", "/nonexistent/root").test  # bundled with scikit-learn


def mean_change(corrupted: ImageArrays, clean: ImageArrays) -> float:
    return (corrupted.images.float() - clean.images.float()).abs().mean().item()


def test_stand_ins_keep_the_test_set_and_change_its_images(digits_test):
    sets = stand_in_corruptions(digits_test)
    assert sets.stand_in and sets.source == STAND_IN_WORDS and "not CIFAR-10-C" in STAND_IN_WORDS
    assert list(sets) == [(corruption, severity) for corruption in STAND_IN_CORRUPTIONS for severity in SEVERITIES]
    assert set(STAND_IN_CORRUPTIONS) <= set(CORRUPTIONS)
    for corruption in STAND_IN_CORRUPTIONS:
        images = []
        for severity in SEVERITIES:
            arrays = sets[corruption, severity]
            assert arrays.images.dtype == torch.uint8 and arrays.images.shape == digits_test.images.shape
            assert torch.equal(arrays.labels, digits_test.labels)
            assert torch.equal(arrays.indices, digits_test.indices)
            assert mean_change(arrays, digits_test) > 0
            images.append(arrays.images)
        assert all(not torch.equal(a, b) for a, b in zip(images, images[1:])), corruption


@pytest.mark.parametrize("corruption", ["gaussian_noise", "brightness", "contrast"])
def test_stand_ins_grow_with_severity(digits_test, corruption):
    sets = stand_in_corruptions(digits_test, [corruption])
    changes = [mean_change(arrays, digits_test) for _, _, arrays in sets.sets()]
    assert changes == sorted(changes) and len(set(changes)) == len(SEVERITIES), changes


def test_stand_ins_are_deterministic_and_leave_global_random_state_alone(digits_test):
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    first = [arrays.images for _, _, arrays in stand_in_corruptions(digits_test).sets()]
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:3], numpy_state[1:3]))
    torch.manual_seed(12345)  # a different global state changes nothing
    again = [arrays.images for _, _, arrays in stand_in_corruptions(digits_test).sets()]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    capped = [arrays.images for _, _, arrays in stand_in_corruptions(digits_test).sets(5)]
    assert all(torch.equal(a[:5], b) for a, b in zip(first, capped))  # a cap keeps each image's corruption


def test_stand_in_names_are_checked(digits_test):
    with pytest.raises(InputError, match="accepted: gaussian_noise, brightness, contrast, pixelate"):
        stand_in_corruptions(digits_test, ["fog"])


def colourful(n: int = 3, side: int = 4) -> ImageArrays:
    generator = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (n, 3, side, side), generator=generator, dtype=torch.uint8)
    images[0, :, 0, 0] = 0  # a black pixel: no hue, no saturation
    return ImageArrays(images, torch.zeros(n, dtype=torch.int64), torch.arange(n))


def test_brightness_is_the_benchmarks_hsv_value_shift():
    clean = colourful()
    sets = stand_in_corruptions(clean, ["brightness"])
    shifts = (0.05, 0.1, 0.15, 0.2, 0.3)  # make_cifar_c.py's
    for severity, shift in zip(SEVERITIES, shifts):
        pixels = clean.images.permute(0, 2, 3, 1).reshape(-1, 3).double() / 255
        expected = []
        for r, g, b in pixels.tolist():
            h, s, v = colorsys.rgb_to_hsv(r, g, b)
            expected.append(colorsys.hsv_to_rgb(h, s, min(v + shift, 1.0)))
        expected = torch.tensor(expected).mul(255).round().reshape(3, 4, 4, 3).permute(0, 3, 1, 2)
        got = sets["brightness", severity].images.double()
        assert (got - expected).abs().max() <= 1, severity


def test_contrast_keeps_each_channel_mean():
    clean = colourful()
    corrupted = stand_in_corruptions(clean, ["contrast"])["contrast", 5].images.double()
    assert torch.allclose(corrupted.mean(dim=(2, 3)), clean.images.double().mean(dim=(2, 3)), atol=0.5)
    spread = clean.images.double() - clean.images.double().mean(dim=(2, 3), keepdim=True)
    corrupted_spread = corrupted - corrupted.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(corrupted_spread, spread * 0.15, atol=1)  # make_cifar_c.py's factor at severity 5


def test_pixelate_makes_blocks_of_box_means(digits_test):
    clean = digits_test.images.double()
    half = stand_in_corruptions(digits_test, ["pixelate"])["pixelate", 4].images.double()  # 8 px → 4 px → 8 px
    block_means = torch.nn.functional.avg_pool2d(clean, 2)
    assert torch.equal(half, block_means.round().repeat_interleave(2, 2).repeat_interleave(2, 3))
