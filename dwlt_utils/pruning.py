"""Masks and pruning over the backbone's prunable weights.

A `Mask` maps backbone parameter names (`layer1.0.conv1.weight`) to boolean tensors (True = kept). The
pruning domain, and the sparsity denominator, is what the backbone's architecture names prunable
(`models.Architecture`; every Conv2d weight of the ResNets here): the classifier, biases and BatchNorm are
never pruned and never counted.

`prune_global_magnitude` reproduces `torch.nn.utils.prune.global_unstructured(..., L1Unstructured,
amount=0.2)` as the official code applies it, mask for mask: the weights still kept are flattened in module
order, and the round(fraction × kept) smallest |w| among them go, found by the same `torch.topk` call, so
ties break the same way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
import torch.nn as nn

from . import io, paths
from .errors import FileFormatError, InputError, MissingInputError
from .models import Architecture, architecture_of

PRUNE_FRACTION = 0.2  # each IMP event removes 20% of the weights still kept
MAX_LEVEL = 40
# Prefixes that wrappers put before backbone names in official ticket files:
# DataParallel (`module.`), nn.Sequential(normalize, model) (`1.`), our own in-model normalisation (`model.`).
_WRAPPER_PREFIX = re.compile(r"^(?:module\.|1\.|model\.)+")


class Mask(Mapping[str, torch.Tensor]):
    """Backbone parameter name → bool tensor of the same shape (True = weight kept), and the architecture it
    was made for (None for a mask read from a file, which holds the tensors alone)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], architecture: Architecture | None = None):
        if not tensors:
            raise InputError("A mask needs at least one tensor; got an empty mapping.")
        self._tensors = {name: t.detach().to(device="cpu", dtype=torch.bool) for name, t in tensors.items()}
        self.architecture = architecture

    # Mapping protocol
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, sparsity={self.sparsity:.4%})"

    # Counts
    @property
    def total(self) -> int:
        return sum(t.numel() for t in self._tensors.values())

    @property
    def kept(self) -> int:
        return sum(int(t.sum()) for t in self._tensors.values())

    @property
    def sparsity(self) -> float:
        """Fraction of zeros over every tensor of the mask (all the backbone's prunable weights)."""
        return 1.0 - self.kept / self.total

    def digest(self) -> str:
        """SHA-256 of the mask's layer names and bits: equal digests, equal masks."""
        sha = hashlib.sha256()
        for name in sorted(self):
            sha.update(name.encode())
            sha.update(self[name].to(torch.uint8).cpu().numpy().tobytes())
        return sha.hexdigest()

    def layers(self) -> dict[str, dict]:
        """Per layer, in module order: its weights, those kept, and its sparsity."""
        return {
            name: {"total": t.numel(), "kept": int(t.sum()), "sparsity": 1.0 - int(t.sum()) / t.numel()}
            for name, t in self._tensors.items()
        }

    def report(self) -> dict:
        """The sparsity with its denominator (which its architecture words), in total and per layer."""
        if self.architecture is None:
            raise InputError(
                "A mask read from a file does not know its architecture, so its sparsity report cannot name its "
                "denominator; read the report saved beside it instead."
            )
        return {
            "denominator": self.architecture.mask_denominator(len(self)),
            "total": self.total,
            "kept": self.kept,
            "sparsity": self.sparsity,
            "layers": self.layers(),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask):
            return NotImplemented
        return self.keys() == other.keys() and all(torch.equal(self[k], other[k]) for k in self)

    # Construction
    @classmethod
    def ones_like(cls, backbone: nn.Module) -> Mask:
        arch = architecture_of(backbone)
        params = dict(backbone.named_parameters())
        names = arch.prunable_weight_names(backbone)
        return cls({name: torch.ones_like(params[name], dtype=torch.bool) for name in names}, arch)

    def keeping_whole(self, names: list[str], backbone: nn.Module) -> Mask:
        """This mask with the named weights kept whole, at the backbone's shapes: a layer replaced by a fresh
        one (the 32 px stem) has no ticket of its own."""
        params = dict(backbone.named_parameters())
        whole = {name: torch.ones_like(params[name], dtype=torch.bool) for name in names}
        return Mask({name: whole.get(name, tensor) for name, tensor in self.items()}, self.architecture)

    @classmethod
    def from_weights(cls, backbone: nn.Module) -> Mask:
        """The mask of a backbone's nonzero prunable weights (what the official `generate_mask` does)."""
        arch = architecture_of(backbone)
        params = dict(backbone.named_parameters())
        return cls({name: params[name] != 0 for name in arch.prunable_weight_names(backbone)}, arch)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> Mask:
        """Import an official ticket: `<module>.weight_mask` entries, optionally under `state_dict`,
        module names possibly prefixed `module.` or `1.`; every other entry is ignored."""
        if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
            state_dict = state_dict["state_dict"]
        tensors = {
            _WRAPPER_PREFIX.sub("", key)[: -len("_mask")]: value
            for key, value in state_dict.items()
            if key.endswith(".weight_mask")
        }
        if not tensors:
            some = ", ".join(list(state_dict)[:4])
            raise FileFormatError(
                f"No `<module>.weight_mask` entries found (keys start: {some}); "
                "a ticket file holds the masks of every pruned layer as `conv1.weight_mask`, "
                "`layer1.0.conv1.weight_mask`, ..."
            )
        return cls(tensors)

    def to_state_dict(self) -> dict[str, torch.Tensor]:
        """Official layout: float 0/1 `<module>.weight_mask` tensors, as `prune.CustomFromMask` expects."""
        return {f"{name}_mask": t.float() for name, t in self._tensors.items()}

    # Persistence: the mask beside its sparsity report
    def save(self, directory: Path) -> Path:
        io.save_torch(paths.mask_file(directory), dict(self._tensors))
        io.write_json(paths.sparsity_file(directory), self.report())
        return Path(directory)

    @staticmethod
    def exists(directory: Path) -> bool:
        """Whether `directory` holds a saved mask."""
        return paths.mask_file(directory).is_file()

    @classmethod
    def load(cls, directory: Path, *, remedy: str = io.RERUN) -> Mask:
        """The mask saved in `directory`; a damaged file raises one sentence ending with `remedy`."""
        path = paths.mask_file(directory)
        if not path.is_file():
            raise MissingInputError(
                f"No mask file at {path}; a mask directory holds {path.name} and {paths.sparsity_file(directory).name}."
            )
        tensors = io.load_torch(path, remedy=remedy)
        if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
            raise FileFormatError(f"{path} does not hold a mask (a dict of tensors); {remedy}.")
        return cls(tensors)

    # Use on a backbone
    def check_matches(self, backbone: nn.Module) -> None:
        """Raise when the mask does not cover exactly the backbone's prunable weights with their shapes."""
        arch = architecture_of(backbone)
        names = arch.prunable_weight_names(backbone)
        params = dict(backbone.named_parameters())
        if list(self) != names:
            missing = [n for n in names if n not in self._tensors]
            extra = [n for n in self._tensors if n not in params]
            raise InputError(
                f"The mask does not match the {arch.name} backbone's {len(names)} {arch.prunable_kind.__name__} "
                "weights "
                f"(missing: {missing[:3]}, unknown: {extra[:3]}); masks are made for one architecture."
            )
        for name in names:
            if self[name].shape != params[name].shape:
                raise InputError(
                    f"The mask of {name} has shape {tuple(self[name].shape)} but the weight has "
                    f"{tuple(params[name].shape)}; masks are made for one architecture."
                )

    def bind(self, backbone: nn.Module) -> MaskedWeights:
        self.check_matches(backbone)
        return MaskedWeights(self, backbone)

    def apply_(self, backbone: nn.Module) -> nn.Module:
        """Zero the pruned weights in place."""
        self.bind(backbone).apply_()
        return backbone


class MaskedWeights:
    """A mask bound to one backbone's parameters, re-applied after every optimiser step.

    Multiplying after the step keeps pruned weights exactly zero whatever momentum and weight decay do;
    the kept weights evolve exactly as they would under torch's pruning reparametrisation, since SGD is
    elementwise.
    """

    def __init__(self, mask: Mask, backbone: nn.Module):
        params = dict(backbone.named_parameters())
        self.params = [params[name] for name in mask]
        self.masks = [mask[name].to(device=p.device, dtype=p.dtype) for name, p in zip(mask, self.params)]

    @torch.no_grad()
    def apply_(self) -> None:
        torch._foreach_mul_(self.params, self.masks)


def _kept_vector(backbone: nn.Module, mask: Mask) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights still kept, their positions in the flat concatenation of every masked weight)."""
    mask.check_matches(backbone)
    params = dict(backbone.named_parameters())
    weights = torch.cat([params[name].detach().float().cpu().flatten() for name in mask])
    keep = torch.cat([mask[name].flatten() for name in mask])
    positions = keep.nonzero().squeeze(1)
    return weights[positions], positions


def _drop(mask: Mask, flat_positions: torch.Tensor, arch: Architecture) -> Mask:
    flat = torch.cat([mask[name].flatten() for name in mask])
    flat[flat_positions] = False
    out, start = {}, 0
    for name in mask:
        n = mask[name].numel()
        out[name] = flat[start : start + n].view_as(mask[name])
        start += n
    return Mask(out, arch)


def _count_to_prune(fraction: float, kept: int) -> int:
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"The pruning fraction must be in [0, 1]; got {fraction}.")
    return round(fraction * kept)  # Python's round, as torch's _compute_nparams_toprune


def prune_global_magnitude(backbone: nn.Module, mask: Mask, fraction: float = PRUNE_FRACTION) -> Mask:
    """A new mask without the round(fraction × kept) kept weights of smallest |w|, ranked over all
    prunable weights together. Neither the backbone nor `mask` is modified."""
    arch = architecture_of(backbone)
    kept_weights, positions = _kept_vector(backbone, mask)
    k = _count_to_prune(fraction, kept_weights.numel())
    if k == 0:
        return Mask(dict(mask), arch)
    smallest = torch.topk(kept_weights.abs(), k=k, largest=False).indices
    return _drop(mask, positions[smallest], arch)


def prune_global_random(
    backbone: nn.Module, mask: Mask, fraction: float, generator: torch.Generator | None = None
) -> Mask:
    """A new mask without round(fraction × kept) kept weights drawn uniformly at random (the baseline)."""
    arch = architecture_of(backbone)
    kept_weights, positions = _kept_vector(backbone, mask)
    k = _count_to_prune(fraction, kept_weights.numel())
    if k == 0:
        return Mask(dict(mask), arch)
    chosen = torch.randperm(kept_weights.numel(), generator=generator)[:k]
    return _drop(mask, positions[chosen], arch)


def one_shot_mask(
    backbone: nn.Module, sparsity: float, method: str = "magnitude", generator: torch.Generator | None = None
) -> Mask:
    """One pruning event from the dense backbone to `sparsity`: OMP (`magnitude`) or the random baseline."""
    full = Mask.ones_like(backbone)
    if method == "magnitude":
        return prune_global_magnitude(backbone, full, sparsity)
    if method == "random":
        return prune_global_random(backbone, full, sparsity, generator)
    raise InputError(f"Unknown one-shot pruning method {method!r}; accepted: 'magnitude', 'random'.")


# The IMP ladder: k pruning events of 20% leave 0.8^k of the weights.
def sparsity_at_level(level: int) -> float:
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= MAX_LEVEL:
        raise InputError(f"An IMP level is an integer in [0, {MAX_LEVEL}]; got {level!r}.")
    return 1.0 - (1.0 - PRUNE_FRACTION) ** level


def _printed_tolerance(value: float) -> float:
    """Half a unit of the last decimal the value was written with (0.9141 → 5e-5), between 1e-9 and 5e-4:
    a value as coarse as 0.5 names no level, while 0.914 (91.4%) still names level 11."""
    text = repr(float(value))
    decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 12
    return min(max(0.5 * 10.0 ** (-decimals), 1e-9), 5e-4)


def level_for_sparsity(sparsity: float) -> int:
    """The IMP level whose sparsity `sparsity` is, exactly or as a paper prints it (0.9141 → 11)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise InputError(f"A sparsity is a fraction in [0, 1), e.g. 0.9141 for 91.41%; got {sparsity!r}.")
    tol = _printed_tolerance(sparsity) + 1e-12
    matches = [k for k in range(MAX_LEVEL + 1) if abs(sparsity_at_level(k) - sparsity) <= tol]
    if len(matches) == 1:
        return matches[0]
    below = max((k for k in range(MAX_LEVEL + 1) if sparsity_at_level(k) < sparsity), default=0)
    nearest = ", ".join(f"level {k} ({sparsity_at_level(k):.4f})" for k in (below, below + 1) if k <= MAX_LEVEL)
    what = "is too coarse to name one level of" if matches else "is not on"
    raise InputError(f"Sparsity {sparsity} {what} the IMP ladder (1 - 0.8^k); the nearest are {nearest}.")


def printed_sparsity(level: int) -> float:
    """The sparsity of a ladder level as papers print it: 1 − 0.8^k rounded to four decimals (0.36, 0.9141),
    or to as many more as it takes to still name one level (near the top of the ladder), so that recorded
    sparsities equal the numbers people type."""
    exact = sparsity_at_level(level)
    for decimals in range(4, 16):
        printed = round(exact, decimals)
        try:
            if level_for_sparsity(printed) == level:
                return printed
        except InputError:  # too coarse to name one level: print another decimal
            continue
    return exact


def ladder(levels: int) -> list[float]:
    return [sparsity_at_level(k) for k in range(levels + 1)]


# Official ticket files
def import_ticket(path: Path) -> Mask:
    """A ticket file written by the official code (a weights-only torch file of `*.weight_mask` entries)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"No ticket file at {path}.")
    state = io.load_torch(path, remedy="a ticket file is a torch file of `<module>.weight_mask` tensors")
    return Mask.from_state_dict(state)


def export_ticket(path: Path, mask: Mask) -> Path:
    """Write `{'state_dict': {<module>.weight_mask: float 0/1}}`, which the official evaluation scripts read."""
    return io.save_torch(Path(path), {"state_dict": mask.to_state_dict()})


def expected_kept(total: int, level: int) -> int:
    """Weights kept after `level` events of round(0.2 × kept), the integer ladder of the official code."""
    kept = total
    for _ in range(level):
        kept -= round(PRUNE_FRACTION * kept)
    return kept


__all__ = [
    "Mask",
    "MaskedWeights",
    "prune_global_magnitude",
    "prune_global_random",
    "one_shot_mask",
    "sparsity_at_level",
    "printed_sparsity",
    "level_for_sparsity",
    "ladder",
    "import_ticket",
    "export_ticket",
    "expected_kept",
]
