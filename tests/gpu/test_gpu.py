"""Checks that need a CUDA device: `pytest -m gpu` on a GPU machine. Skipped (and marked) elsewhere."""

from dataclasses import replace

import pytest
import torch

from dwlt_utils import bench
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


def short_adversarial_run(tmp_path, bf16: bool) -> dict[str, float]:
    splits = load_splits("digits", tmp_path)
    device = torch.device("cuda")
    precision = Precision.for_device(device, bf16=bf16, channels_last=bf16)
    torch.manual_seed(0)
    model = build_model("small_resnet", 10, splits.info.mean, splits.info.std)
    recipe = replace(QUICK.recipes["adv_transfer"], epochs=12, milestones=(6, 9), val_from_epoch=5)
    batches = {n: ArrayBatches(getattr(splits, n), QUICK_16, device) for n in ("train", "val", "test")}
    fit(model, batches["train"], batches["val"], recipe, tmp_path / f"bf16_{bf16}", seed=0, precision=precision,
        progress=False)
    fp32 = Precision.for_device(device, bf16=False, channels_last=False)
    return evaluate(model.eval(), batches["test"], attack=recipe.val_attack, precision=fp32)


def test_bf16_training_matches_fp32_within_a_point(tmp_path):
    fp32 = short_adversarial_run(tmp_path, bf16=False)
    bf16 = short_adversarial_run(tmp_path, bf16=True)
    print(f"fp32 {fp32}  bf16 {bf16}")
    assert abs(bf16["SA"] - fp32["SA"]) <= 1.0
    assert abs(bf16["RA"] - fp32["RA"]) <= 1.0


def test_pgd10_training_at_224px_is_three_times_the_reference_and_400_images_per_second():
    figure = bench.compare("adv_train", 224, Precision.for_device("cuda"), batch=128, steps=6, rounds=3, warmup=3,
                           workers=8)
    print(figure)
    assert figure.ratio >= 3.0
    assert figure.ours_img_s >= 400
