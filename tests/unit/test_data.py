"""dwlt_utils.data on small files written in the genuine on-disk formats (`genuine_files`), read by
torchvision's real classes."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
import torchvision.datasets.mnist as tv_mnist
import torchvision.datasets.svhn as tv_svhn
from PIL import Image
from torchvision import transforms

from dwlt_utils import data
from dwlt_utils.data import DATASETS, ImageArrays, imagenet_folder, limit_train, load_splits, subset_positions
from dwlt_utils.errors import FileFormatError, InputError, MissingInputError, UntrustedFileError

from genuine_files import (
    B_MARK,
    G_MARK,
    ROW1_MARK,
    TEST_OFFSET,
    cifar_rows,
    decode,
    dump_pickle,
    fashion_files,
    write_cifar,
    write_fashion,
    write_svhn,
)

UNOFFICIAL = "differ from the official"
# Small files: 50 training images (60 for Fashion-MNIST), split into SMALL train + 5 validation (the boundary
# inside the fifth CIFAR-10 batch), and 12 test images.
SMALL = {"cifar10": 45, "cifar100": 45, "svhn": 45, "fashion_mnist": 55}


def write_small(root: Path, name: str) -> None:
    if name in ("cifar10", "cifar100"):
        write_cifar(root, name, per_batch=10, n_test=12)
    elif name == "svhn":
        write_svhn(root, 50, 12)
    else:
        write_fashion(root, 60, 12)


def load_small(root: Path, name: str, download: bool = False) -> data.DataSplits:
    """The loader with split sizes fitted to the small files; unofficial files must warn."""
    train = SMALL[name]
    if name == "fashion_mnist":  # Fashion-MNIST has no MD5 check, so no warning either
        return data._load_splits(DATASETS[name], root, download, train, 5)
    with pytest.warns(UserWarning, match=UNOFFICIAL):
        return data._load_splits(DATASETS[name], root, download, train, 5)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test touches the network: a connection or any torchvision download fails the test."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network use attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", refuse)
    monkeypatch.setattr(tv_svhn, "download_url", refuse)
    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", refuse)
    # the real local copies only where a test asks for them
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", Path("/nonexistent/fashion-mnist"))
    monkeypatch.setattr(data, "DOWNLOADED_FASHION_MNIST", Path("/nonexistent/downloaded-fashion-mnist"))
    return attempts


# ---- the paper data sets on small files


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "fashion_mnist"])
def test_small_files_split_in_file_order(tmp_path, name):
    write_small(tmp_path, name)
    splits = load_small(tmp_path, name)
    side = DATASETS[name].native_size
    assert splits.info is DATASETS[name]
    n_train = SMALL[name]
    expected = {"train": torch.arange(n_train), "val": torch.arange(n_train, n_train + 5), "test": torch.arange(12)}
    for split, indices in expected.items():
        arrays = getattr(splits, split)
        assert arrays.images.dtype == torch.uint8 and arrays.images.is_contiguous()
        assert arrays.images.shape == (len(indices), 3, side, side)
        assert arrays.labels.dtype == arrays.indices.dtype == torch.int64
        assert torch.equal(arrays.indices, indices)
        assert torch.equal(decode(arrays.images), indices + TEST_OFFSET * (split == "test"))
        assert torch.equal(arrays.labels, indices % DATASETS[name].num_classes)  # SVHN: 10 read as 0
        assert (arrays.images[:, 0, 1, 0] == ROW1_MARK).all()
        if name == "fashion_mnist":  # grey replicated to three channels
            assert torch.equal(arrays.images, arrays.images[:, :1].expand(-1, 3, -1, -1))
        else:
            assert (arrays.images[:, 1, 0, 0] == G_MARK).all() and (arrays.images[:, 2, 0, 0] == B_MARK).all()


@pytest.mark.parametrize(
    "name, needed", [("cifar10", "50,000"), ("cifar100", "50,000"), ("svhn", "73,257"), ("fashion_mnist", "60,000")]
)
def test_public_call_uses_the_official_split_sizes(tmp_path, name, needed):
    write_small(tmp_path, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unofficial-file warning is tested elsewhere
        with pytest.raises(FileFormatError, match=f"holds (50|60) images.*exactly {needed}"):
            load_splits(name, tmp_path)


def test_split_constants_are_the_protocols():
    sizes = {
        name: (info.train_size, info.val_size, info.num_classes, info.native_size, info.quick)
        for name, info in DATASETS.items()
    }
    assert sizes == {
        "cifar10": (45_000, 5_000, 10, 32, False),
        "cifar100": (45_000, 5_000, 100, 32, False),
        "svhn": (68_257, 5_000, 10, 32, False),
        "fashion_mnist": (55_000, 5_000, 10, 28, True),
        "digits": (1_197, 300, 10, 8, True),
        "visda17": (152_397, 55_388, 12, 224, False),  # the release's lists; its validation images are its test
        "digits_shifted": (1_197, 300, 10, 8, True),
    }
    assert DATASETS["visda17"].test_size == DATASETS["visda17"].val_size
    assert DATASETS["svhn"].mean == (0.4377, 0.4438, 0.4728) and DATASETS["cifar100"].std == (0.2675, 0.2565, 0.2761)


@pytest.fixture
def full_cifar10(tmp_path):
    """CIFAR-10 at its real size (5 × 10,000 + 10,000 images of zeros but for the markers; 180 MB)."""
    write_cifar(tmp_path, "cifar10", per_batch=10_000, n_test=10_000)
    yield tmp_path
    shutil.rmtree(tmp_path / "cifar-10-batches-py")  # do not leave 180 MB behind in pytest's kept folders


def test_cifar10_at_full_size_through_the_public_call(full_cifar10):
    with pytest.warns(UserWarning, match=UNOFFICIAL):
        splits = load_splits("cifar10", full_cifar10)
    assert splits.train.images.shape == (45_000, 3, 32, 32) and splits.test.images.shape == (10_000, 3, 32, 32)
    assert torch.equal(splits.train.indices, torch.arange(45_000))
    assert torch.equal(splits.val.indices, torch.arange(45_000, 50_000))
    assert torch.equal(splits.test.indices, torch.arange(10_000))
    for arrays, offset in ((splits.train, 0), (splits.val, 0), (splits.test, TEST_OFFSET)):
        assert torch.equal(decode(arrays.images), arrays.indices + offset)
        assert torch.equal(arrays.labels, arrays.indices % 10)


def test_files_with_the_official_md5_load_without_warning(tmp_path, monkeypatch):
    folder = write_cifar(tmp_path, "cifar10", per_batch=10, n_test=12)

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(data._Cifar10, "train_list", [[f"data_batch_{b}", md5(f"data_batch_{b}")] for b in range(1, 6)])
    monkeypatch.setattr(data._Cifar10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(data._Cifar10, "meta", {**tv_cifar.CIFAR10.meta, "md5": md5("batches.meta")})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = data._load_splits(DATASETS["cifar10"], tmp_path, False, 45, 5)
    assert torch.equal(decode(splits.val.images), torch.arange(45, 50))


def test_unofficial_warning_names_the_files(tmp_path):
    write_small(tmp_path, "cifar10")
    with pytest.warns(UserWarning) as record:
        data._load_splits(DATASETS["cifar10"], tmp_path, False, 45, 5)
    messages = " ".join(str(w.message) for w in record)
    assert "data_batch_1" in messages and "test_batch" in messages and "not comparable with the paper" in messages


@pytest.mark.parametrize(
    "name, removed, folder",
    [
        ("cifar10", "data_batch_3", "cifar-10-batches-py"),
        ("cifar100", "meta", "cifar-100-python"),
        ("svhn", "test_32x32.mat", ""),
        ("fashion_mnist", "t10k-labels-idx1-ubyte", "FashionMNIST/raw"),
    ],
)
def test_missing_file_is_one_clear_error_and_nothing_is_downloaded(tmp_path, offline, name, removed, folder):
    write_small(tmp_path, name)
    (tmp_path / folder / removed).unlink()
    with pytest.raises(MissingInputError) as err:
        load_splits(name, tmp_path)
    message = str(err.value)
    assert removed in message and str(tmp_path / folder) in message and "download=True" in message
    assert "http" in message  # where to get the files
    assert message.count("\n") == 0 and offline == []


@pytest.mark.parametrize(
    "name, removed, folder",
    [
        ("cifar10", "data_batch_3", "cifar-10-batches-py"),
        ("svhn", "test_32x32.mat", ""),
    ],
)
def test_availability_is_checked_without_reading_anything(tmp_path, offline, name, removed, folder):
    write_small(tmp_path, name)
    data.ensure_available(name, tmp_path)  # small files: present, never unpickled, so no warning either
    (tmp_path / folder / removed).unlink()
    with pytest.raises(MissingInputError) as err:
        data.ensure_available(name, tmp_path)
    assert removed in str(err.value) and "download=True" in str(err.value) and offline == []
    data.ensure_available("digits", tmp_path / "nowhere")  # bundled with scikit-learn: always there
    with pytest.raises(InputError, match="Unknown data set"):
        data.ensure_available("mnist", tmp_path)


def test_download_fails_within_seconds_when_the_host_does_not_answer(tmp_path, monkeypatch, offline):
    def unreachable(address, timeout):
        assert timeout <= 10
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.monotonic()
    with pytest.raises(MissingInputError, match="www.cs.toronto.edu did not answer.*Network is unreachable"):
        load_splits("cifar10", tmp_path, download=True)
    assert time.monotonic() - start < 5 and offline == []  # torchvision's download never started


class _Answering:
    def close(self):
        pass


def test_download_fetches_through_torchvision_only_what_is_missing(tmp_path, monkeypatch):
    write_svhn(tmp_path, 50, 12)
    test_file = (tmp_path / "test_32x32.mat").read_bytes()
    (tmp_path / "test_32x32.mat").unlink()
    fetched = []

    def fake_download_url(url, root, filename, md5):  # stands in for the network, not for torchvision's logic
        fetched.append(url)
        Path(root, filename).write_bytes(test_file)

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: _Answering())
    monkeypatch.setattr(tv_svhn, "download_url", fake_download_url)
    splits = load_small(tmp_path, "svhn", download=True)
    assert fetched == ["http://ufldl.stanford.edu/housenumbers/test_32x32.mat"]
    assert torch.equal(decode(splits.test.images), torch.arange(12) + TEST_OFFSET)
    load_small(tmp_path, "svhn", download=True)  # everything present: nothing fetched again
    assert len(fetched) == 1


def test_cifar_download_goes_through_torchvisions_archive_download(tmp_path, monkeypatch):
    fetched = []

    def fake_archive_download(url, download_root, filename, md5):
        fetched.append(url)
        write_cifar(Path(download_root), "cifar100", per_batch=10, n_test=12)

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: _Answering())
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", fake_archive_download)
    splits = load_small(tmp_path, "cifar100", download=True)
    assert fetched == ["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"] and len(splits.train) == 45


# ---- CIFAR pickles that are not the official files


class _Payload:
    """Unpickling this object creates the folder `marker`: the shape of any code-running pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize(
    "name, replaced",
    [("cifar10", "data_batch_4"), ("cifar10", "test_batch"), ("cifar10", "batches.meta"), ("cifar100", "train")],
)
def test_a_malicious_cifar_pickle_never_runs(tmp_path, name, replaced):
    folder = write_cifar(tmp_path, name, per_batch=10, n_test=12)
    marker = tmp_path / "code_ran"
    payload = pickle.dumps({"data": _Payload(marker), "labels": [], "fine_labels": [], "label_names": []})
    (folder / replaced).write_bytes(payload)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UntrustedFileError, match=f"{replaced} is not the official CIFAR file.*posix.mkdir"):
            data._load_splits(DATASETS[name], tmp_path, False, 45, 5)
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: an unrestricted reader would have run it
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_reader_accepts_genuine_batches_at_every_protocol(tmp_path, protocol):
    batch = {"batch_label": "b", "labels": [3, 1], "data": cifar_rows(np.array([4, 300])), "filenames": [b"x", "y"]}
    dump_pickle(tmp_path / "batch", batch, protocol=protocol)
    loaded = data._load_cifar_pickle(tmp_path / "batch", ("labels",))
    assert loaded["labels"] == [3, 1] and np.array_equal(loaded["data"], batch["data"])


def test_damaged_cifar_pickle_is_a_format_error(tmp_path):
    folder = write_cifar(tmp_path, "cifar10", per_batch=10, n_test=12)
    blob = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(blob[: len(blob) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FileFormatError, match="data_batch_2 is not a readable CIFAR pickle"):
            data._load_splits(DATASETS["cifar10"], tmp_path, False, 45, 5)


# ---- quick-profile data


def test_fashion_mnist_is_copied_from_debians_files(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    debian.mkdir()
    files = fashion_files(60, 12)
    for name, blob in files.items():
        (debian / f"{name}.gz").write_bytes(gzip.compress(blob))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    splits = load_small(tmp_path / "root", "fashion_mnist")
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    assert {name: (raw / name).read_bytes() for name in files} == files
    assert torch.equal(decode(splits.val.images), torch.arange(55, 60))


def test_a_file_that_is_not_idx_is_a_format_error(tmp_path):
    raw = write_fashion(tmp_path, 60, 12)
    (raw / "train-images-idx3-ubyte").write_bytes(b"<html>not an idx file</html>")
    with pytest.raises(FileFormatError, match="not in the idx format"):
        load_small(tmp_path, "fashion_mnist")


LOCAL_COPIES = {
    "DEBIAN_FASHION_MNIST": data.DEBIAN_FASHION_MNIST,
    "DOWNLOADED_FASHION_MNIST": data.DOWNLOADED_FASHION_MNIST,
}


@pytest.fixture(scope="module")
def debian_fashion(tmp_path_factory, fashion_mnist):
    with pytest.MonkeyPatch.context() as patch:  # the autouse fixture points elsewhere
        for name, folder in LOCAL_COPIES.items():
            patch.setattr(data, name, folder)
        return load_splits("fashion_mnist", tmp_path_factory.mktemp("fashion"))


def test_fashion_mnist_from_debians_package(debian_fashion):
    splits = debian_fashion
    assert (len(splits.train), len(splits.val), len(splits.test)) == (55_000, 5_000, 10_000)
    assert splits.train.images.shape[1:] == (3, 28, 28)
    assert torch.equal(splits.val.indices, torch.arange(55_000, 60_000))
    assert splits.train.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the genuine file's first labels
    assert splits.test.labels.bincount().tolist() == [1_000] * 10


def _channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and population std of pixels/255, from a histogram (exact, and no float copy)."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in range(3):
        share = torch.bincount(images[:, channel].reshape(-1), minlength=256).double() / images[:, channel].numel()
        mean = float((share * values).sum())
        means.append(mean)
        stds.append(float((share * (values - mean) ** 2).sum()) ** 0.5)
    return means, stds


def test_fashion_mnist_constants_match_a_recomputation(debian_fashion):
    mean, std = _channel_stats(debian_fashion.train.images)
    assert mean == pytest.approx(DATASETS["fashion_mnist"].mean, abs=5e-5)
    assert std == pytest.approx(DATASETS["fashion_mnist"].std, abs=5e-5)


def test_digits_splits_and_constants():
    from sklearn.datasets import load_digits

    splits = load_splits("digits", "/nonexistent/root")  # bundled: the root is not used
    again = load_splits("digits", "/elsewhere")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1_197, 300, 300)
    assert splits.train.images.shape == (1_197, 3, 8, 8) and splits.train.images.dtype == torch.uint8
    every = torch.cat([splits.train.images, splits.val.images, splits.test.images])
    assert every.min() == 0 and every.max() == 255
    assert torch.equal(torch.cat([splits.train.indices, splits.val.indices, splits.test.indices]), torch.arange(1_797))
    sklearn_digits = load_digits()
    assert torch.equal(splits.test.labels, torch.as_tensor(sklearn_digits.target[1_497:]))
    scaled = torch.as_tensor(sklearn_digits.images[:1_197] * 255 / 16).round()
    assert torch.equal(splits.train.images[:, 0].double(), scaled)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(splits, split).images, getattr(again, split).images)
    mean, std = _channel_stats(splits.train.images)
    assert mean == pytest.approx(DATASETS["digits"].mean, abs=5e-5)
    assert std == pytest.approx(DATASETS["digits"].std, abs=5e-5)


def test_unknown_data_set():
    with pytest.raises(InputError, match="Unknown data set 'imagenet'; known: cifar10, cifar100, svhn"):
        load_splits("imagenet", "/data")


# ---- data-limited subsets


@pytest.mark.parametrize(
    "total, fraction, n",
    [(45_000, 0.01, 450), (45_000, 0.1, 4_500), (68_257, 0.01, 682), (68_257, 0.1, 6_825), (50, 1.0, 50), (7, 0.5, 3)],
)
@pytest.mark.parametrize("how", ["first", "random", "stratified"])
def test_subset_size_is_floored(total, fraction, n, how):
    labels = torch.arange(total) % 10
    assert len(subset_positions(labels, fraction, how)) == n


def test_first_is_the_official_choice():
    assert torch.equal(subset_positions(torch.arange(45_000) % 10, 0.01), torch.arange(450))


def test_random_is_deterministic_per_seed():
    labels = torch.arange(45_000) % 10
    a, b, c = (subset_positions(labels, 0.01, "random", seed) for seed in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.int64 and torch.equal(a, a.sort().values) and len(a.unique()) == 450
    assert a.min() >= 0 and a.max() < 45_000 and a.max() > 449  # not the first N


def test_stratified_is_proportional_and_deterministic():
    generator = torch.Generator().manual_seed(5)
    counts = torch.tensor([20_000, 12_000, 8_000, 4_000, 900, 100])
    labels = torch.repeat_interleave(torch.arange(6), counts)[torch.randperm(int(counts.sum()), generator=generator)]
    a, b, c = (subset_positions(labels, 0.01, "stratified", seed) for seed in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(a) == 450 and torch.equal(a, a.sort().values) and len(a.unique()) == 450
    got = labels[a].bincount(minlength=6).double()
    assert ((got - counts * 450 / counts.sum()).abs() <= 1).all()


def test_stratified_rounding_rule():
    # shares 2.5, 1.5, 1.0 of N = 5: floors 2, 1, 1; the one left over goes to the first of the tied remainders
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    assert labels[subset_positions(labels, 0.5, "stratified")].bincount().tolist() == [3, 1, 1]
    # a class with one image in 1,000 still appears once N is at least the number of classes
    labels = torch.tensor([0] * 600 + [1] * 399 + [2])
    assert labels[subset_positions(labels, 0.01, "stratified")].bincount().tolist() == [5, 4, 1]


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan")])
def test_fraction_outside_the_unit_interval_is_refused(fraction):
    with pytest.raises(InputError, match=r"fraction must be in \(0, 1\]"):
        subset_positions(torch.zeros(100, dtype=torch.long), fraction)


def test_unknown_choice_and_empty_subsets_are_refused():
    with pytest.raises(InputError, match="Unknown subset choice 'balanced'; use 'first', 'random' or 'stratified'"):
        subset_positions(torch.zeros(100, dtype=torch.long), 0.1, "balanced")
    with pytest.raises(InputError, match="selects none"):
        subset_positions(torch.zeros(100, dtype=torch.long), 0.001)


def test_limit_train_keeps_which_images_were_chosen(tmp_path):
    write_small(tmp_path, "svhn")
    splits = load_small(tmp_path, "svhn")
    limited = limit_train(splits, 0.2, "random", seed=2)
    positions = subset_positions(splits.train.labels, 0.2, "random", seed=2)
    assert len(limited.train) == 9 and torch.equal(limited.train.indices, positions)
    assert torch.equal(decode(limited.train.images), limited.train.indices)
    assert limited.val is splits.val and limited.test is splits.test and limited.info is splits.info
    assert torch.equal(limit_train(splits, 0.2).train.indices, torch.arange(9))


def test_image_arrays_take_and_to():
    arrays = ImageArrays(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.arange(4), torch.tensor([7, 8, 9, 10]))
    taken = arrays.take([3, 1])
    assert len(taken) == 2 and taken.indices.tolist() == [10, 8] and taken.labels.tolist() == [3, 1]
    moved = taken.to("cpu")
    assert moved.images.device.type == "cpu" and torch.equal(moved.indices, taken.indices)
    with pytest.raises(InputError, match="integer positions"):
        arrays.take(torch.tensor([True, False, True, False]))
    with pytest.raises(InputError, match="uint8 images N×3×H×W"):
        ImageArrays(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(4), torch.arange(4))


# ---- ImageNet folders


def test_imagenet_folder_with_the_protocol_transforms(tmp_path):
    for split in ("train", "val"):
        for cls, size, fmt in (("n01", (40, 30), "JPEG"), ("n02", (300, 260), "PNG")):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", size, (200, 100, 50)).save(tmp_path / split / cls / f"img.{fmt.lower()}", fmt)
    for split in ("train", "val"):
        folder = imagenet_folder(tmp_path, split)
        assert folder.classes == ["n01", "n02"] and len(folder) == 2
        for i in range(2):
            image, label = folder[i]
            assert image.shape == (3, 224, 224) and image.dtype == torch.float32 and label == i
            assert 0 <= image.min() and image.max() <= 1
    kinds = {
        split: [type(t) for t in imagenet_folder(tmp_path, split).transform.transforms] for split in ("train", "val")
    }
    assert kinds == {
        "train": [transforms.RandomResizedCrop, transforms.RandomHorizontalFlip, transforms.ToTensor],
        "val": [transforms.Resize, transforms.CenterCrop, transforms.ToTensor],
    }  # no normalisation
    val_image, _ = imagenet_folder(tmp_path, "val")[1]  # a plain colour stays that colour (PNG: lossless)
    assert torch.allclose(val_image[:, 100, 100], torch.tensor([200, 100, 50]) / 255)


def test_imagenet_folder_errors(tmp_path):
    with pytest.raises(MissingInputError, match=f"ImageNet val images not found in {tmp_path / 'val'}"):
        imagenet_folder(tmp_path, "val")
    with pytest.raises(InputError, match="must be 'train' or 'val'"):
        imagenet_folder(tmp_path, "test")


def test_the_official_pil_pipelines_exist_at_224_and_32_px_only():
    image = Image.new("RGB", (32, 32), (10, 200, 30))
    assert data.pil_transforms(224, train=False)(image).shape == (3, 224, 224)
    assert data.pil_transforms(32, train=True)(image).shape == (3, 32, 32)
    with pytest.raises(InputError, match="224 or 32 px"):
        data.pil_transforms(64, train=True)
