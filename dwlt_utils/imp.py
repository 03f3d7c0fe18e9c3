"""Iterative magnitude pruning with rewinding to the pre-trained weights (PROTOCOL.md section 3).

Level 1 is one-shot magnitude pruning of θ_p at 20%. Level k+1 trains θ_p ⊙ m_k (every weight, BatchNorm
statistic and the classifier rewound to θ_p, a new optimiser), then removes 20% of the weights still kept
by the trained magnitudes. Each level's mask is saved as `<run_dir>/level_XX/` (`mask.pt` with its
sparsity report); the training that produces level k+1 lives in `level_XX/train/` of level k, so an
interrupted ladder resumes inside the level it was training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from .batches import Batches
from .engine import Precision
from .models import backbone_holding, with_normalization
from .pruning import MASK_FILE, PRUNE_FRACTION, Mask, prune_global_magnitude
from .train import TrainConfig, fit


def level_dir(run_dir: Path, level: int) -> Path:
    return Path(run_dir) / f"level_{level:02d}"


def rewound_model(
    arch: str, source_state: Mapping[str, torch.Tensor], mask: Mask, mean: Sequence[float], std: Sequence[float]
) -> nn.Sequential:
    """θ_p ⊙ m as a `normalize → backbone` model: every tensor of θ_p (fc and BatchNorm included), pruned
    weights zeroed."""
    backbone = backbone_holding(arch, source_state)
    mask.apply_(backbone)
    return with_normalization(backbone, mean, std)


def run_imp(
    arch: str,
    source_state: Mapping[str, torch.Tensor],
    mean: Sequence[float],
    std: Sequence[float],
    train_batches: Batches,
    val_batches: Batches | None,
    recipe: TrainConfig,
    run_dir: Path,
    *,
    levels: int,
    seed: int,
    precision: Precision | None = None,
    progress: bool = True,
) -> list[Mask]:
    """The masks of levels 1..`levels` (sparsity 1 − 0.8^k), computing only the levels not on disk yet."""
    first = level_dir(run_dir, 1)
    if not (first / MASK_FILE).is_file():
        dense = backbone_holding(arch, source_state)
        prune_global_magnitude(dense, Mask.ones_like(dense), PRUNE_FRACTION).save(first)
    masks = [Mask.load(first)]
    for level in range(1, levels):
        following = level_dir(run_dir, level + 1)
        if not (following / MASK_FILE).is_file():
            model = rewound_model(arch, source_state, masks[-1], mean, std)
            fit(model, train_batches, val_batches, recipe, level_dir(run_dir, level) / "train",
                seed=seed, mask=masks[-1], precision=precision, progress=progress)
            prune_global_magnitude(model.model, masks[-1], PRUNE_FRACTION).save(following)
        masks.append(Mask.load(following))
    return masks
