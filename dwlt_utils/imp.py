"""Iterative magnitude pruning with rewinding to the pre-trained weights (PROTOCOL.md section 3).

Level 1 is one-shot magnitude pruning of θ_p at 20%. Level k+1 trains θ_p ⊙ m_k (every weight, BatchNorm
statistic and the classifier rewound to θ_p, a new optimiser), then removes 20% of the weights still kept
by the trained magnitudes. Each level's mask is saved with its sparsity report in its own directory
(`paths.level_dir`); the training that produces level k+1 runs in `paths.level_training_dir` of level k,
so an interrupted ladder resumes inside the level it was training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from . import paths
from .batches import Batches
from .distributed import SINGLE, Ranks, agree, barrier
from .engine import Precision
from .models import backbone_holding, with_normalization
from .pruning import PRUNE_FRACTION, Mask, prune_global_magnitude
from .train import TrainConfig, fit


def rewound_model(
    arch: str, source_state: Mapping[str, torch.Tensor], mask: Mask, mean: Sequence[float], std: Sequence[float]
) -> nn.Sequential:
    """θ_p ⊙ m as a `normalize → backbone` model: every tensor of θ_p (fc and BatchNorm included), pruned
    weights zeroed."""
    backbone = backbone_holding(arch, source_state)
    mask.apply_(backbone)
    return with_normalization(backbone, mean, std)


def next_level(
    arch: str,
    source_state: Mapping[str, torch.Tensor],
    mean: Sequence[float],
    std: Sequence[float],
    train_batches: Batches,
    recipe: TrainConfig,
    run_dir: Path,
    level: int,
    *,
    seed: int,
    precision: Precision | None = None,
    progress: str = "off",
    ranks: Ranks = SINGLE,
    epoch_offset: int = 0,
) -> Mask:
    """Train θ_p ⊙ m_level (rewound) and prune it into the mask of level + 1, which rank 0 saves; on several
    ranks, every rank prunes its own copy and they must agree. The training's epochs draw their data as the
    ladder's epochs `epoch_offset`, `epoch_offset` + 1, ... (`fit`)."""
    mask = Mask.load(paths.level_dir(run_dir, level))
    model = rewound_model(arch, source_state, mask, mean, std)
    fit(
        model,
        train_batches,
        None,
        recipe,
        paths.level_training_dir(run_dir, level),
        seed=seed,
        mask=mask,
        precision=precision,
        progress=progress,
        label=f"IMP level {level} → {level + 1}",
        ranks=ranks,
        epoch_offset=epoch_offset,
    )
    following = prune_global_magnitude(model.model, mask, PRUNE_FRACTION)
    digest = following.digest()
    agree(digest, ranks, f"the mask of level {level + 1}")
    if ranks.main:
        following.save(paths.level_dir(run_dir, level + 1))
        if ranks.world > 1:
            print(f"IMP level {level + 1}: the {ranks.world} ranks agree on its mask (SHA-256 {digest})", flush=True)
    barrier(ranks)  # the mask is on disk before any rank (or the notebook of another node) reads it
    return following


def run_imp(
    arch: str,
    source_state: Mapping[str, torch.Tensor],
    run_dir: Path,
    *,
    levels: int,
    train_level: Callable[[int], object],
) -> list[Mask]:
    """The masks of levels 1..`levels` (sparsity 1 − 0.8^k) of the ladder in `run_dir`, computing only the
    levels not on disk yet: level 1 here, each next one by `train_level(k)` (`next_level` on this process,
    or on several through torchrun), which leaves level k + 1's mask on disk."""
    first = paths.level_dir(run_dir, 1)
    if not Mask.exists(first):
        dense = backbone_holding(arch, source_state)
        prune_global_magnitude(dense, Mask.ones_like(dense), PRUNE_FRACTION).save(first)
    masks = [Mask.load(first)]
    for level in range(1, levels):
        following = paths.level_dir(run_dir, level + 1)
        if not Mask.exists(following):
            train_level(level)
        masks.append(Mask.load(following))
    return masks
