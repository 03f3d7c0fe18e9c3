"""Models: `normalize → backbone`, taking NCHW inputs in [0, 1].

Normalisation is the first layer inside the model, so attacks, ε and the robustness ecosystem
(RobustBench, AutoAttack, torchattacks) all see pixels in [0, 1]. The backbone keeps torchvision's names
(`conv1`, `layer1.0.conv1`, `layer1.0.downsample.0`, `fc`), which is what masks and checkpoints key on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
from torchvision.models import resnet50 as tv_resnet50
from torchvision.models.resnet import BasicBlock

from .errors import InputError

ARCHS = ("resnet50", "resnet50_32px", "small_resnet")


class Normalize(nn.Module):
    """(x - mean) / std per channel, with the constants stored as buffers (they travel with state_dicts)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class SmallResNet(nn.Module):
    """A narrow ResNet of torchvision BasicBlocks, one block per stage, for the CPU-minutes quick profile.

    It has ResNet-50's module names and the 32 px stem (3×3 stride 1, no max-pool), so every code path
    that masks, prunes or converts a ResNet-50 runs unchanged on it.
    """

    def __init__(self, num_classes: int, widths: Sequence[int] = (8, 16, 32, 64)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        inplanes = widths[0]
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(inplanes, planes, stride, downsample)))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_backbone(arch: str, num_classes: int) -> nn.Module:
    """A freshly initialised backbone (no normalisation layer)."""
    if arch == "resnet50":
        return tv_resnet50(num_classes=num_classes)
    if arch == "resnet50_32px":
        net = tv_resnet50(num_classes=num_classes)
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        return net
    if arch == "small_resnet":
        return SmallResNet(num_classes)
    raise InputError(f"Unknown architecture {arch!r}; accepted: {', '.join(ARCHS)}.")


def backbone_holding(arch: str, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """A backbone of `arch` with `state` loaded strictly; the classifier is sized by its `fc.weight`."""
    backbone = build_backbone(arch, state["fc.weight"].shape[0])
    backbone.load_state_dict(state, strict=True)
    return backbone


def with_normalization(backbone: nn.Module, mean: Sequence[float], std: Sequence[float]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(normalize=Normalize(mean, std), model=backbone))


def build_model(arch: str, num_classes: int, mean: Sequence[float], std: Sequence[float]) -> nn.Sequential:
    """`normalize → backbone` for inputs in [0, 1]."""
    return with_normalization(build_backbone(arch, num_classes), mean, std)


def backbone_of(model: nn.Module) -> nn.Module:
    """The backbone inside a `normalize → backbone` model (or the model itself when it has no wrapper)."""
    return model.model if isinstance(model, nn.Sequential) and hasattr(model, "model") else model


def prunable_weight_names(backbone: nn.Module) -> list[str]:
    """Names of every Conv2d weight, in module order: the pruning domain and the sparsity denominator."""
    return [f"{name}.weight" for name, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]


def replace_fc(backbone: nn.Module, num_classes: int, seed: int) -> nn.Module:
    """Swap the classifier for a fresh Linear(in_features, num_classes), initialised from `seed` alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone.fc = nn.Linear(backbone.fc.in_features, num_classes)
    return backbone
