"""Checkpoint registry, layout conversion and safe loading, on files written here in each real layout."""

from __future__ import annotations

import builtins
import dataclasses
import re
from pathlib import Path

import dill
import pytest
import torch
from torchvision.models import resnet50

from dwlt_utils import checkpoints as ck
from dwlt_utils import paths
from dwlt_utils.errors import FileFormatError, InputError, MissingInputError, UntrustedFileError
from dwlt_utils.io import load_torch, read_json, sha256_of
from dwlt_utils.models import build_backbone, build_model
from dwlt_utils.vocabulary import PRETRAININGS

from genuine_files import dataparallel, randomised, robustness_checkpoint, wong_checkpoint

MEAN, STD = ck.IMAGENET_MEAN, ck.IMAGENET_STD


@pytest.fixture(scope="module")
def r50() -> dict[str, torch.Tensor]:
    return randomised(resnet50().state_dict())


@pytest.fixture
def small() -> dict[str, torch.Tensor]:
    return randomised(build_backbone("small_resnet", 10).state_dict(), seed=1)


def dwlt_model(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model = build_model("resnet50", 1000, MEAN, STD)
    model.model.load_state_dict(weights, strict=True)
    return model.state_dict()


# name: (checkpoint builder, torch.save keyword arguments, trust needed, expected meta)
LAYOUT_CASES = {
    "torchvision": (lambda w: w, {}, False, {"layout": "torchvision", "container": None}),
    "dataparallel": (dataparallel, {}, False, {"layout": "dataparallel", "container": None}),
    "wong_wrapper": (
        wong_checkpoint,
        {},
        False,
        {
            "layout": "dataparallel",
            "container": "state_dict",
            "extras": {"epoch": 15, "arch": "resnet50", "best_prec1": pytest.approx(60.9), "optimizer": "<dict>"},
        },
    ),
    "robustness_zip": (
        robustness_checkpoint,
        {"pickle_module": dill},
        True,
        {
            "layout": "robustness",
            "container": "model",
            "format": "zip",
            "full_unpickling": True,
            "normalization": {"mean": pytest.approx(MEAN), "std": pytest.approx(STD)},
        },
    ),
    "robustness_legacy": (
        robustness_checkpoint,
        {"pickle_module": dill, "_use_new_zipfile_serialization": False},
        True,
        {"layout": "robustness", "container": "model", "format": "legacy", "full_unpickling": True},
    ),
    "normalized": (
        dwlt_model,
        {},
        False,
        {
            "layout": "normalized",
            "dropped_keys": ["normalize.mean", "normalize.std"],
            "normalization": {"mean": pytest.approx(MEAN), "std": pytest.approx(STD)},
        },
    ),
}


def assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    unequal = [k for k in want if not torch.equal(got[k], want[k])]
    assert not unequal, unequal[:5]


def assert_one_sentence(err: pytest.ExceptionInfo, path: Path) -> str:
    message = str(err.value)
    assert str(path) in message
    assert "\n" not in message and message.endswith(".")
    assert not re.search(r"[.!?]\s+[A-Z]", message), message  # no second sentence
    return message


@pytest.mark.parametrize("case", LAYOUT_CASES)
def test_every_layout_converts_to_the_same_resnet50_tensors(case, r50, tmp_path):
    build, save_kwargs, trust, expected_meta = LAYOUT_CASES[case]
    path = tmp_path / f"{case}.pt"
    torch.save(build(r50), path, **save_kwargs)
    try:
        state, meta = ck.load_backbone_state(path, "resnet50", trust=trust)
        assert_same_tensors(state, r50)
        resnet50().load_state_dict(state, strict=True)
        assert {k: meta[k] for k in expected_meta} == expected_meta
        assert meta["sha256"] == ck.sha256_of(path) and meta["source"] is None and meta["added_keys"] == []
    finally:
        path.unlink()  # ~100 MB each


def test_robustness_layout_drops_attacker_copy_and_normalisers(small, tmp_path):
    path = tmp_path / "robust.ckpt"
    torch.save(robustness_checkpoint(small), path, pickle_module=dill)
    state, meta = ck.load_backbone_state(path, "small_resnet", trust=True)
    assert_same_tensors(state, small)
    assert len(meta["dropped_keys"]) == len(small) + 4
    assert all(k.startswith(("module.attacker.", "module.normalizer.")) for k in meta["dropped_keys"])
    assert meta["extras"]["epoch"] == 90 and meta["extras"]["args"] == "<Namespace>"


def test_robustness_layout_with_a_different_attacker_copy_is_refused(small, tmp_path):
    checkpoint = robustness_checkpoint(small)
    checkpoint["model"]["module.attacker.model.fc.bias"] = small["fc.bias"] + 1
    path = tmp_path / "inconsistent.ckpt"
    torch.save(checkpoint, path, pickle_module=dill)
    with pytest.raises(FileFormatError, match="attacker copy") as err:
        ck.load_backbone_state(path, "small_resnet", trust=True)
    assert "'fc.bias'" in assert_one_sentence(err, path)


def test_missing_batchnorm_counters_are_added_as_zero(small, tmp_path):
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in small.items() if not k.endswith("num_batches_tracked")}, path)
    state, meta = ck.load_backbone_state(path, "small_resnet")
    assert sorted(meta["added_keys"]) == sorted(k for k in small if k.endswith("num_batches_tracked"))
    assert all(state[k].item() == 0 for k in meta["added_keys"])
    build_backbone("small_resnet", 10).load_state_dict(state, strict=True)


def test_full_pickle_is_refused_without_trust_or_registered_hash(small, tmp_path, monkeypatch):
    path = tmp_path / "robust.ckpt"
    torch.save(robustness_checkpoint(small), path, pickle_module=dill)
    digest = ck.sha256_of(path)
    with pytest.raises(UntrustedFileError) as err:
        ck.load_backbone_state(path, "small_resnet")
    message = assert_one_sentence(err, path)
    assert digest in message and "trust=True" in message and "registry" in message

    state, meta = ck.load_backbone_state(path, "small_resnet", trust=True)
    assert_same_tensors(state, small)
    assert meta["source"] is None

    registered = dataclasses.replace(ck.get_source("adv"), sha256=digest)
    monkeypatch.setattr(ck, "SOURCES", ck.SOURCES + (registered,))
    state, meta = ck.load_backbone_state(path, "small_resnet")
    assert_same_tensors(state, small)
    assert meta["source"]["name"] == "adv" and meta["source"]["variant"] == "linf 4/255"


class Malicious:
    """Unpickling this runs `exec`, which would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_malicious_pickle_is_refused_and_never_runs(legacy, small, tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": small, "hook": Malicious(marker)}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UntrustedFileError) as err:
        ck.load_backbone_state(path, "small_resnet")
    assert "exec" in assert_one_sentence(err, path)
    assert not marker.exists()
    with pytest.raises(UntrustedFileError):
        ck.load_pretrained_backbone("small_resnet", path)
    assert not marker.exists()


def truncated(path: Path, legacy: bool, weights: dict[str, torch.Tensor]) -> Path:
    torch.save(weights, path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    "make, error, words",
    [
        (
            lambda p, w: p.write_bytes(b"<!DOCTYPE html><html><body>Before you continue</body></html>"),
            FileFormatError,
            ["HTML page", "download it again"],
        ),
        (lambda p, w: p.write_bytes(b"\n  <html>consent</html>"), FileFormatError, ["HTML page"]),
        (lambda p, w: truncated(p, False, w), FileFormatError, ["truncated or corrupt", "zip format"]),
        (lambda p, w: truncated(p, True, w), FileFormatError, ["truncated or corrupt", "legacy format"]),
        (lambda p, w: p.write_bytes(b""), FileFormatError, ["empty"]),
        (
            lambda p, w: p.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n"),
            FileFormatError,
            ["Git LFS pointer"],
        ),
        (lambda p, w: p.write_bytes(b"\x00\x01 not a checkpoint"), FileFormatError, ["not a PyTorch checkpoint"]),
        (
            lambda p, w: p.write_bytes(b"\x80\x02" + bytes(range(256)) * 4),
            FileFormatError,
            ["truncated or corrupt", "legacy format"],
        ),
        (
            lambda p, w: torch.save({"encoder.weight": torch.ones(2), "decoder.bias": torch.ones(2)}, p),
            FileFormatError,
            ["unknown key layout", "'encoder.weight'", "conv1.weight"],
        ),
        (lambda p, w: torch.save({"epoch": 3, "net": w}, p), FileFormatError, ["unknown key layout", "'epoch'"]),
        (lambda p, w: torch.save([w], p), FileFormatError, ["unknown key layout", "list"]),
        (lambda p, w: torch.save({}, p), FileFormatError, ["unknown key layout", "no keys"]),
        (lambda p, w: torch.save({**w, "head.weight": torch.ones(1)}, p), FileFormatError, ["'head.weight'"]),
        (
            lambda p, w: torch.save({k: v for k, v in w.items() if not k.startswith("fc.")}, p),
            FileFormatError,
            ["unknown key layout", "no 'fc.weight'"],
        ),
        (lambda p, w: None, MissingInputError, ["does not exist"]),
    ],
    ids=[
        "html",
        "html_whitespace",
        "truncated_zip",
        "truncated_legacy",
        "empty",
        "lfs_pointer",
        "garbage",
        "pickle_header_garbage",
        "foreign_keys",
        "no_state_dict",
        "not_a_dict",
        "empty_dict",
        "stray_key",
        "no_classifier",
        "missing",
    ],
)
@pytest.mark.parametrize("trust", [False, True], ids=["untrusted", "trusted"])
def test_bad_files_give_one_clear_sentence(make, error, words, trust, small, tmp_path):
    path = tmp_path / "weights.pt"
    make(path, small)
    with pytest.raises(error) as err:
        # trust must not turn a broken file into a raw torch error
        ck.load_backbone_state(path, "small_resnet", trust=trust)
    message = assert_one_sentence(err, path)
    for word in words:
        assert word in message


@pytest.mark.parametrize("html", [True, False], ids=["html", "missing"])
def test_registered_file_names_point_to_their_download_location(html, tmp_path):
    path = tmp_path / "resnet50_linf_eps4.0.ckpt"
    if html:
        path.write_text("<html><body>consent</body></html>")
    with pytest.raises(FileFormatError if html else MissingInputError) as err:
        ck.load_backbone_state(path, "small_resnet")
    assert ck.get_source("adv", eps_255=4).url in assert_one_sentence(err, path)


def test_load_pretrained_backbone_resnet50_and_mismatched_architectures(r50, tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(r50, path)
    try:
        net, meta = ck.load_pretrained_backbone("resnet50", path)
        assert_same_tensors(net.state_dict(), r50)
        assert meta["num_classes"] == 1000 and meta["arch"] == "resnet50"
        for arch, words in [
            ("resnet50_32px", ["keys of another shape", "'conv1.weight'", "[64, 3, 7, 7]"]),
            ("small_resnet", ["unexpected keys", "keys of another shape"]),
        ]:
            with pytest.raises(FileFormatError) as err:
                ck.load_pretrained_backbone(arch, path)
            message = assert_one_sentence(err, path)
            assert all(word in message for word in words + [repr(arch)]), message
    finally:
        path.unlink()


def test_load_pretrained_backbone_small_resnet_from_dwlt_model(small, tmp_path):
    model = build_model("small_resnet", 10, MEAN, STD)
    model.model.load_state_dict(small)
    path = tmp_path / "small.pt"
    torch.save(model.state_dict(), path)
    net, meta = ck.load_pretrained_backbone("small_resnet", path)
    assert_same_tensors(net.state_dict(), small)
    assert net.fc.out_features == 10 and meta["layout"] == "normalized"
    with pytest.raises(FileFormatError, match="'fc.weight'") as err:
        ck.load_pretrained_backbone("small_resnet", path, num_classes=100)
    assert_one_sentence(err, path)
    with pytest.raises(FileFormatError, match="missing keys") as err:
        ck.load_pretrained_backbone("resnet50", path)
    assert_one_sentence(err, path)
    with pytest.raises(InputError, match="accepted"):
        ck.load_pretrained_backbone("vgg16", path)


def test_save_backbone_state_writes_plain_tensors_and_a_json_sidecar(small, tmp_path):
    source = tmp_path / "robust.ckpt"
    torch.save(robustness_checkpoint(small), source, pickle_module=dill)
    state, meta = ck.load_backbone_state(source, "small_resnet", trust=True)
    target = ck.save_backbone_state(tmp_path / "converted" / "backbone.pt", state, meta)
    assert_same_tensors(load_torch(target), small)  # weights_only=True
    assert read_json(paths.sidecar_file(target)) == {**meta, "backbone_sha256": sha256_of(target)}
    again, again_meta = ck.load_backbone_state(target, "small_resnet")
    assert_same_tensors(again, small)
    assert again_meta["layout"] == "torchvision" and not again_meta["full_unpickling"]
    with pytest.raises(InputError):
        ck.save_backbone_state(tmp_path / "bad.pt", {"a": 1}, {})


@pytest.mark.parametrize(
    "args, kwargs, variant",
    [
        (("standard",), {}, "IMAGENET1K_V1"),
        (("standard", 0), {}, "IMAGENET1K_V1"),
        (("adv",), {}, "linf 4/255"),
        (("fast_adv",), {}, "linf 4/255"),
        (("fast_adv", 2), {}, "linf 2/255"),
        (("adv", 8), {}, "linf 8/255"),
        (("adv", 0.5), {}, "linf 0.5/255"),
        (("adv",), {"norm": "l2", "eps_l2": 3}, "l2 3"),
        (("adv",), {"norm": "l2", "eps_l2": 0.25}, "l2 0.25"),
    ],
)
def test_get_source_accepts_known_names_and_eps(args, kwargs, variant):
    source = ck.get_source(*args, **kwargs)
    assert (source.name, source.variant) == (args[0], variant)


@pytest.mark.parametrize(
    "args, kwargs",
    [
        (("imagenet",), {}),
        (("adv", 3), {}),
        (("fast_adv", 8), {}),
        (("standard", 4), {}),
        (("adv",), {"norm": "linf2"}),
        (("adv",), {"norm": "l2"}),
        (("adv", 4), {"norm": "l2", "eps_l2": 3}),
        (("adv",), {"norm": "l2", "eps_l2": 2}),
    ],
)
def test_get_source_rejects_others_naming_what_is_accepted(args, kwargs):
    with pytest.raises(InputError) as err:
        ck.get_source(*args, **kwargs)
    assert "\n" not in str(err.value)
    assert args[0] in str(err.value)


def test_registry_is_consistent():
    assert {s.name for s in ck.SOURCES} == set(PRETRAININGS)
    assert all(s.layout in ck.LAYOUTS for s in ck.SOURCES)
    filenames = [s.filename for s in ck.SOURCES]
    hashes = [s.sha256 for s in ck.SOURCES if s.sha256]
    assert len(set(filenames)) == len(filenames) and len(set(hashes)) == len(hashes)
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)
    assert all(bool(s.sha256) == bool(s.sha256_from) for s in ck.SOURCES)
    standard = ck.get_source("standard")
    assert standard.sha256.startswith("0676ba61") and "0676ba61" in standard.url
    assert standard.imagenet_top1 == 76.13
    assert ck.get_source("adv").eps == pytest.approx(4 / 255) and ck.get_source("adv").eps_255 == pytest.approx(4)
    assert ck.get_source("adv", 4).imagenet_top1 == pytest.approx(63.9, abs=0.05)
    assert ck.get_source("adv", 8).imagenet_top1 == pytest.approx(54.5, abs=0.05)
    assert ck.get_source("fast_adv", 2).imagenet_top1 == pytest.approx(60.9)
    assert all(s.url is None or s.filename in s.url for s in ck.SOURCES)
