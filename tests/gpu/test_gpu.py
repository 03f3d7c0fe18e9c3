"""Checks that need a CUDA device: `pytest -m gpu` on a GPU machine. Skipped (and marked) elsewhere."""

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dwlt_utils import nvimgcodec_jpeg
from dwlt_utils.augment import PAPER_224, QUICK_16, sample_boxes
from dwlt_utils.batches import DEVICE_DECODERS, ArrayBatches, JpegBatches, decode, jpeg_folder_batches, resized_crops
from dwlt_utils.data import load_splits
from dwlt_utils.engine import Precision, generator_for
from dwlt_utils.models import build_model
from dwlt_utils.profiles import QUICK
from dwlt_utils.pruning import one_shot_mask
from dwlt_utils.train import GraphedStep, make_optimizer, train_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@contextmanager
def no_waits():
    """Any copy to the host or stream synchronisation inside the block raises."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("cuda_graphs", [False, True], ids=["eager", "graphed"])
def test_training_steps_never_wait_for_the_device(tmp_path, cuda_graphs):
    splits = load_splits("digits", tmp_path)
    precision = Precision.for_device("cuda", cuda_graphs=cuda_graphs)  # bf16 autocast, channels_last
    torch.manual_seed(0)
    model = precision.prepare(build_model("small_resnet", 10, splits.info.mean, splits.info.std))
    masked = one_shot_mask(model.model, 0.5).bind(model.model)
    config = QUICK.recipes["adv_transfer"]
    optimizer = make_optimizer(model, config, precision)
    batches = ArrayBatches(splits.train, QUICK_16, precision.device)
    graphed = GraphedStep(model, optimizer, attack=config.attack, masked=masked, precision=precision)
    attack_stream = generator_for(precision.device, 2)

    def epoch(key):
        for x, y in batches.train(config.batch_size, generator_for(precision.device, key), drop_last=True):
            if cuda_graphs:
                graphed(x, y)
            else:
                train_step(
                    model,
                    x,
                    y,
                    optimizer,
                    attack=config.attack,
                    masked=masked,
                    generator=attack_stream,
                    precision=precision,
                )

    epoch(0)  # warm-up: cuDNN's autotuning may synchronise, and the graph is captured
    with no_waits():
        epoch(1)


def needs_installed(decoder: str) -> None:
    """The nvimgcodec decoder's package is optional on a GPU machine: the GPU check's report names it when absent."""
    if decoder == "nvimgcodec" and not nvimgcodec_jpeg.available():
        pytest.skip(f"{nvimgcodec_jpeg.PACKAGE} is not installed")


@pytest.mark.parametrize("decoder", DEVICE_DECODERS)
def test_batching_jpegs_never_waits_for_the_device(tmp_path, decoder):
    needs_installed(decoder)
    files = jpeg_files(tmp_path)
    batches = jpeg_folder_batches([(str(p), 0) for p in files], PAPER_224, torch.device("cuda"), 2, decoder)
    next(iter(batches.train(4, generator_for(torch.device("cuda"), 0), drop_last=True)))  # workers start
    with no_waits():
        served = [x for x, _ in batches.train(4, generator_for(torch.device("cuda"), 1), drop_last=True)]
    assert served and all(x.is_cuda and x.shape[1:] == (3, 224, 224) for x in served)


def jpeg_files(folder: Path) -> list[Path]:
    """Photograph-like JPEGs at each chroma subsampling (4:4:4, 4:2:2, 4:2:0), baseline and progressive."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:333, 0:457]
    base = (ys[..., None] * rng.uniform(0.2, 0.6, 3) + xs[..., None] * rng.uniform(0.2, 0.6, 3)) % 256
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    files = []
    for name, subsampling in (("444", 0), ("422", 1), ("420", 2)):
        for progressive in (False, True):
            path = folder / f"{name}{'_progressive' * progressive}.JPEG"
            Image.fromarray(pixels).save(
                path, format="JPEG", quality=90, subsampling=subsampling, progressive=progressive
            )
            files.append(path)
    return files


@pytest.mark.parametrize("decoder", ["turbo", "mixed"])
def test_the_exact_decoders_give_pils_pixels_on_the_gpu_at_every_chroma_subsampling(tmp_path, decoder):
    """PROTOCOL.md section 10: the default decoder must match PIL within 2 grey levels on 4:2:0, 4:2:2 and
    4:4:4 files; nvJPEG alone does not (its deviation is named in the ladder's records)."""
    files = jpeg_files(tmp_path)
    batches = JpegBatches([(str(p), 0) for p in files], PAPER_224, torch.device("cuda"), 0, decoder)
    items = [batches.files[i] for i in range(len(files))]
    images = batches._images([data for data, _, _ in items], [on_device for _, on_device, _ in items])
    for path, image in zip(files, images):
        reference = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert image.is_cuda and image.shape == reference.shape
        assert int((image.cpu().int() - reference.int()).abs().max()) <= 2, path.name
    if decoder == "mixed":
        assert [on_device for _, on_device, _ in items] == [True, False, False, False, False, False]


def test_nvimgcodec_gives_pils_pixels_on_the_gpu_at_every_chroma_subsampling(tmp_path):
    """Whether nvImageCodec's GPU decoding, chroma interpolated, can lose its deviation (batches.DECODER_DEVIATIONS):
    within 2 grey levels of PIL on 4:4:4, 4:2:2 and 4:2:0 files, baseline and progressive."""
    needs_installed("nvimgcodec")
    files = jpeg_files(tmp_path)
    gaps = {}
    for path, image in zip(files, decode([p.read_bytes() for p in files], torch.device("cuda"), "nvimgcodec")):
        reference = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert image.is_cuda and image.shape == reference.shape
        gaps[path.name] = int((image.cpu().int() - reference.int()).abs().max())
    print("max grey-level gap to PIL", gaps)
    assert max(gaps.values()) <= 2, gaps


def test_nvjpeg_differs_from_pil_only_where_chroma_is_subsampled(tmp_path):
    """What the nvjpeg decoder's deviation says, measured: identical to libjpeg-turbo on 4:4:4."""
    files = jpeg_files(tmp_path)
    data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    for path, a, b in zip(files, decode(data, torch.device("cpu")), decode(data, torch.device("cuda"))):
        gap = int((a.int() - b.cpu().int()).abs().max())
        print(path.name, "max grey-level gap", gap)
        if path.name == "444.JPEG":
            assert gap <= 2


def test_crops_resized_on_the_gpu_match_the_cpu(tmp_path):
    files = jpeg_files(tmp_path)
    data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    on_cpu = decode(data, torch.device("cpu"))
    on_gpu = [image.cuda() for image in on_cpu]
    generator = torch.Generator().manual_seed(0)
    heights, widths = (torch.tensor([i.shape[d] for i in on_cpu]) for d in (1, 2))
    boxes = sample_boxes(len(on_cpu), heights, widths, generator=generator)
    flips = torch.rand(len(on_cpu), generator=generator) < 0.5
    crops = [resized_crops(on_cpu, boxes, flips, 224), resized_crops(on_gpu, boxes.cuda(), flips.cuda(), 224)]
    assert crops[1].is_cuda and crops[1].shape == (len(files), 3, 224, 224)
    assert float((crops[0] - crops[1].cpu()).abs().max()) <= 1 / 255
