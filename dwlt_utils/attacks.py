"""ℓ∞ attacks on models that take pixels in [0, 1].

`pgd_linf` has the semantics of advertorch 0.2.3's `LinfPGDAttack`, which the official code uses:
δ ~ U(-ε, ε) clipped so that x + δ ∈ [0, 1]; each step δ += α·sign(∇δ loss), then δ is clipped to
[-ε, ε] and x + δ to [0, 1]; the last iterate is returned (no best-loss tracking).

Every attack saves and restores the model's train/eval mode and its parameters' `requires_grad`, asks
autograd for the input gradient only (so no parameter gradient is computed or left behind), and returns
a detached tensor inside the ε-ball and [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InputError, check_choice

BN_MODES = ("eval", "train")


@contextmanager
def attack_context(model: nn.Module, bn_mode: str) -> Iterator[None]:
    """Put the model in the attack's mode with frozen parameters; restore both afterwards.

    bn_mode "eval" is the evaluation convention; "train" reproduces the official adversarial training,
    whose attack runs in train mode, so BatchNorm uses batch statistics and its running statistics also
    see the attack's forward passes.
    """
    check_choice("attack BN mode", bn_mode, BN_MODES)
    was_training = model.training
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    model.train(bn_mode == "train")
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)


def pgd_linf(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    bn_mode: str = "eval",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted ℓ∞ PGD on cross-entropy; `eps` and `alpha` in [0, 1] pixel units."""
    if eps < 0 or alpha < 0 or steps < 0:
        raise InputError(f"PGD needs eps ≥ 0, alpha ≥ 0 and steps ≥ 0; got eps={eps}, alpha={alpha}, steps={steps}.")
    x = x.detach()
    with attack_context(model, bn_mode):
        if random_start:
            delta = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * (2 * eps) - eps
            delta = (x + delta).clamp_(0.0, 1.0) - x
        else:
            delta = torch.zeros_like(x)
        for _ in range(steps):
            delta.requires_grad_(True)
            # Summed loss: the sign of the gradient is that of the mean, with less underflow in low precision.
            loss = F.cross_entropy(model(x + delta), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta = (delta + alpha * grad.sign()).clamp_(-eps, eps)
                delta = (x + delta).clamp_(0.0, 1.0) - x
    return (x + delta).detach()


def fgsm_rs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float | None = None,
    bn_mode: str = "train",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FGSM with random start (Wong et al. 2020, "Fast is better than free"): one PGD step of α = 1.25ε
    from a uniform start, the recipe behind the `fast_adv` pre-training."""
    return pgd_linf(
        model,
        x,
        y,
        eps=eps,
        alpha=1.25 * eps if alpha is None else alpha,
        steps=1,
        random_start=True,
        bn_mode=bn_mode,
        generator=generator,
    )


@dataclass(frozen=True)
class AttackSpec:
    """An ℓ∞ PGD attack written in 255ths of the pixel range, as papers state it (ε = 8/255)."""

    eps_255: float
    alpha_255: float
    steps: int
    random_start: bool = True
    bn_mode: str = "eval"

    def __post_init__(self) -> None:
        for name in ("eps_255", "alpha_255"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InputError(f"{name} is a number of 255ths ≥ 0 (8 for ε = 8/255); got {value!r}.")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise InputError(f"steps is an integer ≥ 0; got {self.steps!r}.")
        check_choice("attack BN mode", self.bn_mode, BN_MODES)

    @property
    def eps(self) -> float:
        return self.eps_255 / 255

    @property
    def alpha(self) -> float:
        return self.alpha_255 / 255

    def describe(self) -> str:
        start = "random start" if self.random_start else "no random start"
        return (
            f"linf PGD-{self.steps} eps={_fraction_255(self.eps_255)}/255 alpha={_fraction_255(self.alpha_255)}/255, "
            f"{start}, 1 restart, cross-entropy, BN {self.bn_mode} mode"
        )

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return pgd_linf(
            model,
            x,
            y,
            eps=self.eps,
            alpha=self.alpha,
            steps=self.steps,
            random_start=self.random_start,
            bn_mode=self.bn_mode,
            generator=generator,
        )


def _fraction_255(value: float) -> str:
    return f"{value:g}" if float(value).is_integer() else f"{value:.4g}"


# The protocol's attacks (PROTOCOL.md §3-5).
PGD20_EVAL = AttackSpec(eps_255=8, alpha_255=2, steps=20, bn_mode="eval")
PGD10_TRAIN = AttackSpec(eps_255=8, alpha_255=2, steps=10, bn_mode="train")
PGD3_IMP = AttackSpec(eps_255=8, alpha_255=16 / 3, steps=3, bn_mode="train")
