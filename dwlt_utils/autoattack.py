"""AutoAttack beside PGD-20: the robustness check of adversarial-transfer cells (`eval_attack="autoattack"`).

PGD over-estimates the robust accuracy of pruned networks; the field reports AutoAttack (Croce & Hein 2020,
the RobustBench standard). The check evaluates each kept checkpoint of a finished cell on the first N test
images under both the cell's PGD evaluation attack and the standard AutoAttack, in fp32 and in the same pass,
and writes the two RA values as records of their own (`paths.autoattack_file`), apart from the cell's: the
double-win decision reads the protocol's PGD-20 on the whole test split only.

The standard version at its published settings, composed from torchattacks' attacks, since its
`AutoAttack` class runs 10 iterations per attack instead of 100: APGD-CE (100 iterations), APGD-T and FAB-T
(100 iterations, the 9 most likely other classes as targets), then Square (5,000 queries, p_init 0.8 and
no rescaling of its schedule, as the reference's standard version: torchattacks rescales by default), one
restart each, every attack on the images the earlier ones did not break. Beside the two RA values the check
records their worst case per image (an image counts as robust only if neither attack broke it), which can
never exceed either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from . import paths, results
from .attacks import attack_context
from .data import dataset_info
from .errors import DwltError, InputError, MissingInputError, check_choice, check_number
from .profiles import Profile

# A transfer run (`transfer.TransferConfig`, on the floor above this module): its `regime` and its recipe's
# `val_attack` are what a check reads of it.
TransferRun = Any

EVAL_ATTACKS = ("pgd20", "autoattack")  # pgd20: the protocol's evaluation only
GAP_FLAG = 2.0  # percentage points of PGD-20 RA above AutoAttack RA that 06 flags
WORST_CASE = "worst case per image of "  # how the record of both attacks at once begins its `attack`
ON_THE_FIRST = (
    ", on the first "  # how a check's `attack` names its images: "<attack>, fp32, on the first N test images"
)


@dataclass(frozen=True)
class AutoAttack:
    """The standard AutoAttack, ℓ∞ at ε = eps_255/255, as an attack of `evaluate` (the model takes [0, 1])."""

    eps_255: float
    iterations: int = 100
    target_classes: int = 9
    square_queries: int = 5000

    def describe(self) -> str:
        return (
            f"AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) linf eps={self.eps_255:g}/255, "
            f"{self.iterations} iterations, {self.target_classes} target classes, {self.square_queries:,} queries "
            "(Square p_init 0.8, schedule not rescaled)"
        )

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        torchattacks = _torchattacks()
        # torchattacks seeds torch's global generators: the seed comes from the evaluation's stream, and
        # the caller's global random state is kept.
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=x.device).item())
        devices = [x.device] if x.device.type == "cuda" else []
        with attack_context(model, "eval"), torch.random.fork_rng(devices=devices):
            with torch.no_grad():
                classes = model(x[:1]).shape[1]
            targets = min(self.target_classes, classes - 1)
            eps, steps = self.eps_255 / 255, self.iterations
            apgd_t = torchattacks.APGDT(model, eps=eps, steps=steps, n_restarts=1, n_classes=classes, seed=seed)
            fab_t = torchattacks.FAB(
                model, eps=eps, steps=steps, n_restarts=1, multi_targeted=True, n_classes=classes, seed=seed
            )
            apgd_t.n_target_classes = fab_t.n_target_classes = targets
            attacks = [
                torchattacks.APGD(model, eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed),
                apgd_t,
                fab_t,
                torchattacks.Square(
                    model,
                    eps=eps,
                    n_queries=self.square_queries,
                    n_restarts=1,
                    p_init=0.8,
                    resc_schedule=False,
                    seed=seed,
                ),
            ]
            return torchattacks.MultiAttack(attacks)(x, y).detach()


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        raise MissingInputError(
            'eval_attack "autoattack" needs torchattacks: pip install --no-deps torchattacks==3.5.1 '
            "(its pinned requests is not needed)."
        ) from None
    return torchattacks


@dataclass(frozen=True)
class AutoAttackCheck:
    """What `eval_attack = "autoattack"` adds to a notebook's adversarial cells: PGD and AutoAttack RA of
    every kept checkpoint on the first `images` test images."""

    images: int

    @classmethod
    def create(
        cls, profile: Profile, cells: list[TransferRun], eval_attack: str, images: int
    ) -> AutoAttackCheck | None:
        """Validate a notebook's `eval_attack` and `autoattack_images` (0: the profile's count, at most the
        test split) for its cells; None for "pgd20". Raises one sentence."""
        check_choice("eval_attack", eval_attack, EVAL_ATTACKS)
        test_size = dataset_info(profile.dataset(cells[0].dataset)).test_size
        check_number("autoattack_images", images, 0, test_size, integer=True)
        if eval_attack == "pgd20":
            return None
        if not any(cell.regime == "adv" for cell in cells):
            raise InputError('eval_attack "autoattack" checks adversarial transfer; add "adv" to regimes.')
        _torchattacks()
        return cls(images or min(profile.autoattack_images, test_size))

    def file(self, directory: Path) -> Path:
        return paths.autoattack_file(directory, self.images)

    def done(self, config: TransferRun, directory: Path) -> bool:
        """Whether a run has this check (a standard-transfer run needs none), measured as it is measured now."""
        return config.regime != "adv" or self._current(config, directory)

    def _current(self, config: TransferRun, directory: Path) -> bool:
        """Whether the check's file is there, reads, and names today's attacks: one written before Square's
        schedule or the worst case per image were as they are now, or a damaged one, is measured again."""
        if not self.file(directory).is_file():
            return False
        try:
            names = set(results.load(directory, self.file(directory).name).attack)
        except DwltError:
            return False
        return names == set(self.attack_names(config))

    @staticmethod
    def attacks(config: TransferRun) -> tuple:
        """The cell's PGD evaluation attack and the AutoAttack at its ε."""
        pgd = config.recipe.val_attack
        return pgd, AutoAttack(pgd.eps_255)

    def attack_names(self, config: TransferRun) -> list[str]:
        """What the check's records name in `attack`: PGD, AutoAttack, then their worst case per image."""
        pgd, auto = self.attacks(config)
        on_images = f", fp32{ON_THE_FIRST}{self.images:,} test images"
        worst = f"{WORST_CASE}{pgd.describe()} and {auto.describe()}"
        return [pgd.describe() + on_images, auto.describe() + on_images, worst + on_images]

    @staticmethod
    def record(fields: dict, attack: str, robust: torch.Tensor, wall_s: float) -> dict:
        """A check's record of the RA that per-image robustness gives, with the cell's own fields."""
        ra = 100.0 * robust.sum().item() / max(len(robust), 1)
        return results.make_record(**fields, attack=attack, value=ra, wall_s=wall_s, git_rev=results.git_revision())


def side_by_side(checks: pd.DataFrame, *, checkpoint: str | None = None) -> pd.DataFrame:
    """PGD and AutoAttack RA on the same test images, and their worst case per image (`RA_both`, absent from
    checks measured before it was), as means over seeds: one row per group, ticket, checkpoint (only
    `checkpoint` when given) and image count, with the gap (PGD − AutoAttack) and `flag` when it exceeds
    `GAP_FLAG` points (PGD then over-states the ticket's robustness)."""
    rows = checks if checkpoint is None else checks[checks.checkpoint == checkpoint]
    if rows.empty:
        return pd.DataFrame()
    name, images = (part for _, part in rows.attack.str.rsplit(ON_THE_FIRST, n=1, expand=True).items())
    rows = rows.assign(
        attack_kind=name.map(_kind),
        images=images.str.split(" ").str[0].str.replace(",", "").astype(int),
    )
    keys = [*results.GROUP_KEYS, "regime", "ticket", "level", "sparsity", "checkpoint", "images"]
    table = rows.pivot_table(index=keys, columns="attack_kind", values="value", aggfunc="mean").reset_index()
    seeds = rows.groupby(keys).seed.nunique().rename("seeds").reset_index()
    table = table.merge(seeds, on=keys)
    table["gap"] = table.RA_pgd - table.RA_autoattack
    table["flag"] = table.gap > GAP_FLAG
    table.columns.name = None
    return table.sort_values(keys, ignore_index=True)


def _kind(attack: str) -> str:
    """The column of `side_by_side` that a check record's attack fills."""
    if attack.startswith(WORST_CASE):
        return "RA_both"
    return "RA_autoattack" if attack.startswith("AutoAttack") else "RA_pgd"
