"""Models: `normalize → backbone`, taking NCHW inputs in [0, 1], and the registry of backbone architectures.

Normalisation is the first layer inside the model, so attacks, ε and the robustness ecosystem
(RobustBench, AutoAttack, torchattacks) all see pixels in [0, 1]. The backbone keeps torchvision's names
(`conv1`, `layer1.0.conv1`, `layer1.0.downsample.0`, `fc`), which is what masks and checkpoints key on.

An `Architecture` is everything the code knows of one backbone: how to build it, which layers are pruned
(and so count in the sparsity denominator), what its classifier is called, the input size it is made for.
Every module asks the record (`architecture(name)`, or `architecture_of(backbone)` for a built one), so a new
architecture is one `register` call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn as nn
from torchvision.models import resnet50 as tv_resnet50
from torchvision.models.resnet import BasicBlock

from .errors import InputError

# The attribute a built backbone carries its architecture's name in (plain, so never in a state dict).
ARCHITECTURE_ATTRIBUTE = "architecture_name"


@dataclass(frozen=True)
class Architecture:
    """One backbone architecture. It has no normalisation of its own: the model's `normalize` layer takes the
    mean and std of the data it is trained on (a data set's own, or ImageNet's for the published sources)."""

    name: str
    builder: Callable[[int], nn.Module]  # a freshly initialised backbone for N classes
    input_px: int  # the side of the square images it is made for
    classifier: str = "fc"  # the attribute holding the final nn.Linear
    prunable_kind: type[nn.Module] = nn.Conv2d  # the weight of every layer of this kind is pruned and counted
    # Fits a backbone to 32 px inputs in place, as the official 32 px variant does; returns the weights it
    # replaced by fresh layers. None: the architecture has no 32 px variant.
    small_input_stem: Callable[[nn.Module], list[str]] | None = None

    def build(self, num_classes: int) -> nn.Module:
        """A freshly initialised backbone (no normalisation layer) that knows its architecture."""
        backbone = self.builder(num_classes)
        setattr(backbone, ARCHITECTURE_ATTRIBUTE, self.name)
        return backbone

    @property
    def classifier_weight(self) -> str:
        return f"{self.classifier}.weight"

    def classes_in(self, state: Mapping[str, torch.Tensor]) -> int:
        """The number of classes of a state dict of this architecture, read from its classifier."""
        if self.classifier_weight not in state:
            raise InputError(
                f"A {self.name} state dict holds its classifier as {self.classifier_weight!r}, which this one lacks."
            )
        return state[self.classifier_weight].shape[0]

    def holding(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """A backbone with `state` loaded strictly; the classifier is sized by the state's."""
        backbone = self.build(self.classes_in(state))
        backbone.load_state_dict(state, strict=True)
        return backbone

    def fresh_classifier(self, backbone: nn.Module, num_classes: int, seed: int) -> nn.Module:
        """Swap the classifier for a fresh Linear(in_features, num_classes), initialised from `seed` alone."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            in_features = getattr(backbone, self.classifier).in_features
            setattr(backbone, self.classifier, nn.Linear(in_features, num_classes))
        return backbone

    def fit_to_small_inputs(self, backbone: nn.Module, seed: int) -> list[str]:
        """Give the backbone the 32 px stem in place, its fresh layers initialised from `seed` alone; returns
        the names of the weights replaced."""
        stem = self.check_small_inputs()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return stem(backbone)

    def check_small_inputs(self) -> Callable[[nn.Module], list[str]]:
        """The 32 px stem, or one sentence when the architecture has none."""
        if self.small_input_stem is None:
            raise InputError(f"The {self.name} architecture has no 32 px variant; use resolution 224.")
        return self.small_input_stem

    def prunable_layers(self, backbone: nn.Module) -> list[tuple[str, nn.Module]]:
        """(name, module) of every prunable layer, in module order."""
        return [(name, m) for name, m in backbone.named_modules() if isinstance(m, self.prunable_kind)]

    def prunable_weight_names(self, backbone: nn.Module) -> list[str]:
        """The pruning domain and the sparsity denominator, in module order."""
        return [f"{name}.weight" for name, _ in self.prunable_layers(backbone)]

    def sparsity_denominator(self, backbone: nn.Module) -> str:
        """What a sparsity of this backbone is a fraction of, as records say it."""
        layers = self.prunable_layers(backbone)
        weights = sum(m.weight.numel() for _, m in layers)
        return f"all {weights:,} weights of the {len(layers)} backbone {self.prunable_kind.__name__} layers"

    def mask_denominator(self, tensors: int) -> str:
        """What a mask's sparsity report says its sparsity is a fraction of."""
        kind = self.prunable_kind.__name__
        return f"all {tensors} backbone {kind} weights ({self.classifier}, biases and BatchNorm excluded)"

    @property
    def axis_label(self) -> str:
        """How a figure names the sparsity of this architecture."""
        return f"sparsity (% of backbone {self.prunable_kind.__name__} weights)"

    @cached_property
    def state_keys(self) -> tuple[str, ...]:
        """The keys of a state dict of this architecture, built on the meta device without touching the RNG."""
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            return tuple(self.builder(1).state_dict())

    @cached_property
    def example_keys(self) -> tuple[str, ...]:
        """Three keys that show what a state dict of this architecture looks like: its first two prunable
        weights and its classifier's (for ResNets `conv1.weight`, `layer1.0.conv1.weight`, `fc.weight`)."""
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            prunable = self.prunable_weight_names(self.builder(1))
        return (*prunable[:2], self.classifier_weight)


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Add an architecture to the registry under its name."""
    if arch.name in ARCHITECTURES:
        raise InputError(f"An architecture named {arch.name!r} is already registered; give the new one another name.")
    ARCHITECTURES[arch.name] = arch
    return arch


def architecture(name: str) -> Architecture:
    """The registered architecture `name`."""
    if name not in ARCHITECTURES:
        raise InputError(f"Unknown architecture {name!r}; accepted: {', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[name]


def architecture_of(backbone: nn.Module) -> Architecture:
    """The architecture a backbone was built as (`Architecture.build`, or a class that is one architecture)."""
    name = getattr(backbone, ARCHITECTURE_ATTRIBUTE, None)
    if name is None:
        raise InputError(
            f"This {type(backbone).__name__} was not built from a registered architecture (models.build_backbone), "
            f"so which of its layers are pruned is unknown; accepted: {', '.join(ARCHITECTURES)}."
        )
    return architecture(name)


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

    architecture_name = "small_resnet"  # the class is that architecture, however it is built

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


def resnet_cifar_stem(net: nn.Module) -> list[str]:
    """The CIFAR stem of the official 32 px variant: conv1 becomes a fresh 3×3 stride-1 conv (PyTorch's
    default initialisation, as there) with conv1's output channels, and the max-pool goes."""
    net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return ["conv1.weight"]


def _resnet50_32px(num_classes: int) -> nn.Module:
    """torchvision's ResNet-50 with the CIFAR stem (the speed benchmark's 32 px model)."""
    net = tv_resnet50(num_classes=num_classes)
    resnet_cifar_stem(net)
    return net


register(
    Architecture(
        "resnet50",
        lambda num_classes: tv_resnet50(num_classes=num_classes),
        input_px=224,
        small_input_stem=resnet_cifar_stem,
    )
)
register(Architecture("resnet50_32px", _resnet50_32px, input_px=32))
register(Architecture("small_resnet", SmallResNet, input_px=32, small_input_stem=resnet_cifar_stem))


def build_backbone(arch: str, num_classes: int) -> nn.Module:
    """A freshly initialised backbone of the architecture named `arch` (no normalisation layer)."""
    return architecture(arch).build(num_classes)


def backbone_holding(arch: str, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """A backbone of `arch` with `state` loaded strictly; the classifier is sized by the state's."""
    return architecture(arch).holding(state)


def with_normalization(backbone: nn.Module, mean: Sequence[float], std: Sequence[float]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(normalize=Normalize(mean, std), model=backbone))


def build_model(arch: str, num_classes: int, mean: Sequence[float], std: Sequence[float]) -> nn.Sequential:
    """`normalize → backbone` for inputs in [0, 1]."""
    return with_normalization(build_backbone(arch, num_classes), mean, std)


def backbone_of(model: nn.Module) -> nn.Module:
    """The backbone inside a `normalize → backbone` model (or the model itself when it has no wrapper)."""
    return model.model if isinstance(model, nn.Sequential) and hasattr(model, "model") else model


def prunable_weight_names(backbone: nn.Module) -> list[str]:
    """Names of the weights its architecture prunes, in module order: the pruning domain and the sparsity
    denominator."""
    return architecture_of(backbone).prunable_weight_names(backbone)


def sparsity_denominator(backbone: nn.Module) -> str:
    """What a sparsity of this backbone is a fraction of, as records say it."""
    return architecture_of(backbone).sparsity_denominator(backbone)


def replace_classifier(backbone: nn.Module, num_classes: int, seed: int) -> nn.Module:
    """Swap the classifier (whatever its architecture calls it) for a fresh Linear(in_features, num_classes),
    initialised from `seed` alone."""
    return architecture_of(backbone).fresh_classifier(backbone, num_classes, seed)
