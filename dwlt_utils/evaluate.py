"""Standard accuracy (SA) and robust accuracy (RA) over a whole split, in batches on the device.

SA and RA of one model come from the same pass: each batch is classified clean and under the attack.
The model is evaluated in eval mode; handed a model in train mode, the functions warn (BatchNorm would
otherwise use batch statistics and update its running ones), evaluate in eval mode and restore the mode.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from .attacks import AttackSpec
from .batches import Batches
from .engine import Precision

EVAL_SEED = 20220606  # fixed start of the attack's random start, so that RA is reproducible


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    if was_training:
        warnings.warn(
            "evaluate: the model was in train mode; evaluating it in eval mode (BatchNorm running statistics) "
            "and restoring train mode afterwards.",
            stacklevel=3,
        )
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def correct_per_image(
    model: nn.Module,
    batches: Batches,
    *,
    attack=None,
    batch_size: int = 256,
    precision: Precision | None = None,
    seed: int = EVAL_SEED,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Whether `model` classifies each eval image of `batches` right, clean and (with an attack) attacked: two
    boolean tensors on the device, in the images' order (None for the attacked one without an attack)."""
    device = next(model.parameters()).device
    precision = precision or Precision.for_device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    clean, attacked = [], []
    with eval_mode(model):
        for x, labels in batches.eval(batch_size):
            x = precision.input(x)
            with torch.no_grad(), precision.autocast():
                clean.append(model(x).argmax(1) == labels)
            if attack is not None:
                with precision.autocast():
                    x_adv = attack(model, x, labels, generator)
                with torch.no_grad(), precision.autocast():
                    attacked.append(model(x_adv).argmax(1) == labels)

    def joined(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool, device=device)

    return joined(clean), joined(attacked) if attack is not None else None


def evaluate(
    model: nn.Module,
    batches: Batches,
    *,
    attack: AttackSpec | None = None,
    batch_size: int = 256,
    precision: Precision | None = None,
    seed: int = EVAL_SEED,
) -> dict[str, float]:
    """{"SA": %, "RA": %} (RA only with an attack) of `model` over every eval batch of `batches`."""
    clean, attacked = correct_per_image(
        model, batches, attack=attack, batch_size=batch_size, precision=precision, seed=seed
    )
    seen = max(len(clean), 1)
    out = {"SA": 100.0 * clean.sum().item() / seen}
    if attacked is not None:
        out["RA"] = 100.0 * attacked.sum().item() / seen
    return out
