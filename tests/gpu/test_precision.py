"""bf16 training against fp32 on a CUDA device: `pytest -m gpu`. Skipped (and marked) elsewhere.

The 16 short runs share the one GPU as 16 processes: a small ResNet on 16 px digits leaves most of the chip idle,
so together they take about what the slowest one takes (58 s on an H200, against 106 s and more one by one)."""

import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import pytest
import torch

from dwlt_utils.augment import QUICK_16
from dwlt_utils.batches import ArrayBatches
from dwlt_utils.data import load_splits
from dwlt_utils.engine import Precision
from dwlt_utils.evaluate import evaluate
from dwlt_utils.models import build_model
from dwlt_utils.profiles import QUICK
from dwlt_utils.train import fit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SEEDS = range(8)


def short_adversarial_run(folder: str, bf16: bool, seed: int) -> dict[str, float]:
    """SA and RA on the test digits after 12 epochs of adversarial training in one precision (a process of its
    own: its data and run directory in `folder`)."""
    folder = Path(folder)
    splits = load_splits("digits", folder)
    precision = Precision.for_device("cuda", bf16=bf16, channels_last=bf16)
    torch.manual_seed(seed)
    model = build_model("small_resnet", 10, splits.info.mean, splits.info.std)
    recipe = replace(QUICK.recipes["adv_transfer"], epochs=12, milestones=(6, 9), val_from_epoch=5)
    batches = {n: ArrayBatches(getattr(splits, n), QUICK_16, precision.device) for n in ("train", "val", "test")}
    fit(model, batches["train"], batches["val"], recipe, folder / "run", seed=seed, precision=precision, progress="off")
    fp32 = Precision.for_device("cuda", bf16=False, channels_last=False)
    return evaluate(model.eval(), batches["test"], attack=recipe.val_attack, precision=fp32)


def parallel_runs(tmp_path: Path, runs: list[tuple[bool, int]]) -> list[dict[str, float]]:
    """`short_adversarial_run` of every (bf16, seed), each in a process of its own ("spawn": CUDA cannot be
    forked), in the order given."""
    folders = [str(tmp_path / f"bf16_{bf16}_seed_{seed}") for bf16, seed in runs]
    with ProcessPoolExecutor(max_workers=len(runs), mp_context=get_context("spawn")) as pool:
        return list(pool.map(short_adversarial_run, folders, *zip(*runs)))


def test_bf16_training_matches_fp32_within_a_point(tmp_path):
    # One run's accuracy on the 300 test digits moves by more than a point from seed to seed, so the two
    # precisions are compared on their means over the same seeds, not on a single pair of runs.
    runs = [(bf16, seed) for bf16 in (False, True) for seed in SEEDS]
    metrics = dict(zip(runs, parallel_runs(tmp_path, runs)))
    for metric in ("SA", "RA"):
        fp32, bf16 = ([metrics[(key, seed)][metric] for seed in SEEDS] for key in (False, True))
        print(f"{metric}: fp32 {statistics.mean(fp32):.2f} {fp32}  bf16 {statistics.mean(bf16):.2f} {bf16}")
        assert abs(statistics.mean(bf16) - statistics.mean(fp32)) <= 1.0, metric
