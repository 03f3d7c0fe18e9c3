"""The registry of backbone architectures: the three the paper and the quick profile use, and a fourth one,
registered from outside the package, that runs a quick transfer cell with nothing else changed."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn

from dwlt_utils import io, paths, profiles, results, transfer, vocabulary
from dwlt_utils.checkpoints import load_backbone_state, load_pretrained_backbone, save_backbone_state
from dwlt_utils.engine import Precision
from dwlt_utils.errors import FileFormatError, InputError
from dwlt_utils.models import (
    ARCHITECTURES,
    Architecture,
    architecture,
    build_backbone,
    prunable_weight_names,
    register,
    sparsity_denominator,
)
from dwlt_utils.notebook import Session
from dwlt_utils.paths import Roots
from dwlt_utils.pruning import Mask


@pytest.mark.parametrize(("name", "px"), [("resnet50", 224), ("resnet50_32px", 32), ("small_resnet", 32)])
def test_each_architecture_builds_and_prunes_every_conv2d_weight(name, px):
    arch = architecture(name)
    backbone = build_backbone(name, 10)
    assert arch.input_px == px and arch.classifier == "fc"
    assert getattr(backbone, arch.classifier).out_features == 10
    convs = [f"{n}.weight" for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
    assert prunable_weight_names(backbone) == convs


def test_an_unknown_architecture_is_one_sentence_naming_the_accepted_ones():
    with pytest.raises(InputError) as err:
        architecture("vgg16")
    assert str(err.value) == "Unknown architecture 'vgg16'; accepted: resnet50, resnet50_32px, small_resnet."


def test_a_name_already_registered_is_refused():
    with pytest.raises(InputError) as err:
        register(dataclasses.replace(architecture("small_resnet"), input_px=16))
    assert str(err.value) == (
        "An architecture named 'small_resnet' is already registered; give the new one another name."
    )
    assert architecture("small_resnet").input_px == 32


class PrunedConv2d(nn.Conv2d):
    """The convolutions this architecture prunes; its stem is a plain Conv2d, kept dense."""


class TinyNet(nn.Module):
    """A tiny VGG-like net whose classifier is `head`, not `fc`."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.features = nn.Sequential(
            PrunedConv2d(8, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            PrunedConv2d(16, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


TINY = Architecture("tiny_net", TinyNet, input_px=16, classifier="head", prunable_kind=PrunedConv2d)
SOURCE_CLASSES = 7  # unlike the 10 digits, so a classifier left in place would show


@pytest.fixture()
def tiny():
    register(TINY)
    yield TINY
    del ARCHITECTURES[TINY.name]


def test_a_registered_architecture_runs_a_transfer_cell(tiny, tmp_path, monkeypatch):
    profile = dataclasses.replace(profiles.QUICK, name="quick_tiny", arch=tiny.name)
    monkeypatch.setitem(profiles.PROFILES, profile.name, profile)
    # Records accept the profiles of the vocabulary only, so that none is mistaken for another's.
    monkeypatch.setitem(results.CHOICES, "profile", (*results.CHOICES["profile"], profile.name))
    roots = Roots(tmp_path / "data", tmp_path / "runs", tmp_path / "weights")
    session = Session(profile, 1, Precision.for_device("cpu", bf16=False), roots)
    # The source, where notebook 01 would have pre-trained it (as tests/unit/conftest.py's plant_source does).
    torch.manual_seed(0)
    source = tiny.build(SOURCE_CLASSES).state_dict()
    eps = vocabulary.source_eps_255("adv", profile.source_eps_255)
    save_backbone_state(roots.source(profile.name, "adv", eps), source, {"profile": profile.name})

    given = dict(pretraining="adv", dataset="cifar10", ticket="omp", sparsity=0.36, epochs=1)
    config = transfer.TransferConfig.create(profile, "std", given)
    records = transfer.run_transfer(config, session, notebook="03_std_transfer")

    assert list(records.metric) == ["SA"] and records.value.between(0, 100).all()
    assert set(records.profile) == {profile.name} and set(records.level) == {2}
    # The ticket covers exactly the architecture's prunable layers: the stem and the head stay dense.
    ticket = roots.one_shot(profile.name, "adv", eps, "magnitude", 0.36, config.ticket_seed)
    mask = Mask.load(ticket)
    assert list(mask) == ["features.0.weight", "features.3.weight"] == prunable_weight_names(tiny.holding(source))
    report = io.read_json(paths.sparsity_file(ticket))
    assert report["denominator"] == "all 2 backbone PrunedConv2d weights (head, biases and BatchNorm excluded)"
    # The classifier the architecture names was replaced by one of the data set's 10 classes, and training
    # kept the pruned weights at zero while the dense stem stayed dense.
    trained = io.load_torch(paths.checkpoint_file(roots.transfer_cell(config, session.seed), "best_sa"))["model"]
    assert trained["model.head.weight"].shape == (10, 16) and not any(".fc." in k for k in trained)
    assert all(not trained[f"model.{name}"][~mask[name]].any() for name in mask)
    assert torch.count_nonzero(trained["model.stem.0.weight"]) == 8 * 3 * 3 * 3
    # Records give the sparsity's denominator in the architecture's words.
    denominator = sparsity_denominator(tiny.holding(source))
    assert denominator == "all 3,456 weights of the 2 backbone PrunedConv2d layers"
    assert set(records.sparsity_denominator) == {denominator}


def test_a_checkpoint_of_a_registered_architecture_converts_by_its_own_keys(tiny, tmp_path):
    state = tiny.build(SOURCE_CLASSES).state_dict()
    path = tmp_path / "tiny.pt"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # a DataParallel file
    net, meta = load_pretrained_backbone(tiny.name, path)
    assert meta["layout"] == "dataparallel" and meta["num_classes"] == SOURCE_CLASSES
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    torch.save({k: v for k, v in state.items() if not k.startswith("head.")}, path)
    with pytest.raises(FileFormatError) as err:
        load_backbone_state(path, tiny.name)
    assert "no 'head.weight'); expected a tiny_net state dict (features.0.weight, features.3.weight" in str(err.value)
