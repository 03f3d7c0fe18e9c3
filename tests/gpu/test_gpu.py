"""Checks that need a CUDA device: `pytest -m gpu` on a GPU machine. Skipped (and marked) elsewhere."""

import statistics
from dataclasses import replace

import pytest
import torch

from dwlt_utils import bench
from dwlt_utils.augment import QUICK_16
from dwlt_utils.batches import ArrayBatches
from dwlt_utils.data import load_splits
from dwlt_utils.engine import Precision, generator_for
from dwlt_utils.evaluate import evaluate
from dwlt_utils.models import build_model
from dwlt_utils.profiles import QUICK
from dwlt_utils.pruning import one_shot_mask
from dwlt_utils.train import fit, make_optimizer, train_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


SEEDS = range(8)


def short_adversarial_run(tmp_path, bf16: bool, seed: int) -> dict[str, float]:
    splits = load_splits("digits", tmp_path)
    device = torch.device("cuda")
    precision = Precision.for_device(device, bf16=bf16, channels_last=bf16)
    torch.manual_seed(seed)
    model = build_model("small_resnet", 10, splits.info.mean, splits.info.std)
    recipe = replace(QUICK.recipes["adv_transfer"], epochs=12, milestones=(6, 9), val_from_epoch=5)
    batches = {n: ArrayBatches(getattr(splits, n), QUICK_16, device) for n in ("train", "val", "test")}
    fit(
        model,
        batches["train"],
        batches["val"],
        recipe,
        tmp_path / f"bf16_{bf16}_seed_{seed}",
        seed=seed,
        precision=precision,
        progress="off",
    )
    fp32 = Precision.for_device(device, bf16=False, channels_last=False)
    return evaluate(model.eval(), batches["test"], attack=recipe.val_attack, precision=fp32)


def test_bf16_training_matches_fp32_within_a_point(tmp_path):
    # One run's accuracy on the 300 test digits moves by more than a point from seed to seed, so the two
    # precisions are compared on their means over the same seeds, not on a single pair of runs.
    runs = {bf16: [short_adversarial_run(tmp_path, bf16, seed) for seed in SEEDS] for bf16 in (False, True)}
    for metric in ("SA", "RA"):
        fp32, bf16 = ([run[metric] for run in runs[key]] for key in (False, True))
        print(f"{metric}: fp32 {statistics.mean(fp32):.2f} {fp32}  bf16 {statistics.mean(bf16):.2f} {bf16}")
        assert abs(statistics.mean(bf16) - statistics.mean(fp32)) <= 1.0, metric


def test_training_steps_never_wait_for_the_device(tmp_path):
    splits = load_splits("digits", tmp_path)
    precision = Precision.for_device("cuda")  # the defaults: bf16 autocast, channels_last
    torch.manual_seed(0)
    model = precision.prepare(build_model("small_resnet", 10, splits.info.mean, splits.info.std))
    masked = one_shot_mask(model.model, 0.5).bind(model.model)
    config = QUICK.recipes["adv_transfer"]
    optimizer = make_optimizer(model, config)
    batches = ArrayBatches(splits.train, QUICK_16, precision.device)

    def steps(generator):
        for x, y in batches.train(config.batch_size, generator, drop_last=True):
            train_step(
                model, x, y, optimizer, attack=config.attack, masked=masked, generator=generator, precision=precision
            )

    steps(generator_for(precision.device, 0))  # warm-up: cuDNN's autotuning may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any copy to the host or stream synchronisation now raises
    try:
        steps(generator_for(precision.device, 1))
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_pgd10_training_at_224px_is_three_times_the_reference_and_400_images_per_second():
    figure = bench.compare(
        "adv_train", 224, Precision.for_device("cuda"), batch=128, steps=6, rounds=3, warmup=3, workers=8
    )
    print(figure)
    assert figure.ratio >= 3.0
    assert figure.ours_img_s >= 400


def test_jpegs_decoded_and_cropped_on_the_gpu_match_the_cpu(tmp_path):
    """nvJPEG against libjpeg-turbo on the same files, then the same crops: within a grey level or two (the
    IDCTs may round differently; the CPU path is checked against PIL in tests/unit/test_jpeg_batches.py)."""
    from dwlt_utils.augment import PAPER_224, sample_boxes
    from dwlt_utils.batches import JpegBatches, decode, resized_crops

    from genuine_files import write_imagenet

    files = sorted((write_imagenet(tmp_path, classes=2, train_per_class=4, val_per_class=1) / "train").rglob("*"))
    samples = [(str(p), 0) for p in files if p.is_file()]
    data = [JpegBatches(samples, PAPER_224, torch.device("cpu"), 0).files[i][0] for i in range(len(samples))]
    on_cpu, on_gpu = decode(data, torch.device("cpu")), decode(data, torch.device("cuda"))
    for a, b in zip(on_cpu, on_gpu):
        assert b.is_cuda and a.shape == b.shape and int((a.int() - b.cpu().int()).abs().max()) <= 2
    generator = torch.Generator().manual_seed(0)
    heights, widths = (torch.tensor([i.shape[d] for i in on_cpu]) for d in (1, 2))
    boxes = sample_boxes(len(on_cpu), heights, widths, generator=generator)
    flips = torch.rand(len(on_cpu), generator=generator) < 0.5
    crops = [resized_crops(images, boxes, flips, 224) for images in (on_cpu, on_gpu)]
    assert crops[1].is_cuda and crops[1].shape == (len(samples), 3, 224, 224)
    assert float((crops[0] - crops[1].cpu()).abs().max()) <= 3 / 255
    batch = JpegBatches(samples, PAPER_224, torch.device("cuda"), 0).crop_flip(on_gpu, torch.Generator("cuda"))
    assert batch.is_cuda and batch.shape == (len(samples), 3, 224, 224) and 0 <= batch.min() <= batch.max() <= 1
