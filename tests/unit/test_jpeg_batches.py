"""ImageNet JPEGs decoded in batches and cropped on the device (`batches.JpegBatches`) against the reference:
PIL decoding and torchvision's per-image transforms of the same files, in the layouts ImageNet holds (RGB,
greyscale and CMYK JPEGs, and a PNG named .JPEG)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from dwlt_utils.augment import PAPER_224, sample_boxes
from dwlt_utils.batches import (
    DEVICE_DECODERS,
    JpegBatches,
    JpegFiles,
    decode,
    jpeg_folder_batches,
    resized_crops,
    resolve_decoder,
)
from dwlt_utils.distributed import Ranks
from dwlt_utils.engine import generator_for
from dwlt_utils.errors import InputError, MissingInputError

from genuine_files import write_imagenet

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> list[Path]:
    """Train JPEGs of assorted sizes, plus the odd files of ImageNet's training set."""
    root = write_imagenet(tmp_path_factory.mktemp("imagenet"), classes=2, train_per_class=3, val_per_class=1)
    odd = root / "train" / "n01440764"
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (203, 317, 3), dtype=np.uint8)
    Image.fromarray(pixels[..., 0]).save(odd / "grey.JPEG", format="JPEG", quality=90)
    Image.fromarray(pixels).convert("CMYK").save(odd / "cmyk.JPEG", format="JPEG", quality=90)
    Image.fromarray(pixels).save(odd / "png_named_jpeg.JPEG", format="PNG")
    return sorted((root / "train").rglob("*.JPEG"))


def pil_pixels(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def test_decoding_a_batch_gives_what_pil_decodes(jpegs):
    data = [JpegFiles([(str(p), 0)])[0][0] for p in jpegs]
    for path, ours in zip(jpegs, decode(data, CPU)):
        reference = pil_pixels(Image.open(path))
        assert ours.shape == reference.shape, path.name
        assert int((ours.int() - reference.int()).abs().max()) <= 1, path.name


def test_the_protocols_crop_and_flip_agree_with_torchvision_on_pil_images_within_one_grey_level(jpegs):
    batches = JpegBatches([(str(p), 0) for p in jpegs], PAPER_224, CPU, workers=0)
    images = decode([batches.files[i][0] for i in range(len(jpegs))], CPU)
    ours = batches.crop_flip(images, torch.Generator().manual_seed(3))
    assert ours.shape == (len(jpegs), 3, 224, 224) and ours.dtype == torch.float32
    # The same boxes and flips, drawn again, applied by torchvision to the PIL images.
    generator = torch.Generator().manual_seed(3)
    heights, widths = (torch.tensor([i.shape[d] for i in images]) for d in (1, 2))
    boxes = sample_boxes(len(jpegs), heights, widths, generator=generator)
    flips = torch.rand(len(jpegs), generator=generator) < 0.5
    assert 0 < int(flips.sum()) < len(jpegs)
    shrunk = 0
    for k, path in enumerate(jpegs):
        top, left, height, width = boxes[k].tolist()
        shrunk += min(height, width) > 224
        reference = TF.resized_crop(Image.open(path).convert("RGB"), top, left, height, width, [224, 224])
        reference = pil_pixels(TF.hflip(reference) if flips[k] else reference).float()
        # PIL rounds to 8 bits; within one grey level beyond that
        assert float((ours[k] * 255 - reference).abs().max()) <= 1.0 + 1e-3, path.name
    assert shrunk  # boxes shrunk with antialiasing as well as boxes enlarged


def test_batches_on_two_ranks_are_disjoint_shares_of_one_epoch(jpegs):
    samples = [(str(p), i) for i, p in enumerate(jpegs)]
    batches = JpegBatches(samples, PAPER_224, CPU, workers=0)
    seen = []
    for rank in range(2):
        generator = generator_for(CPU, 1, 0)
        for x, y in batches.train(4, generator, ranks=Ranks(rank, 2)):
            assert x.shape == (len(y), 3, 224, 224) and len(y) <= 2
            seen.append(y.tolist())
    labels = [label for batch in seen for label in batch]
    assert len(labels) == len(set(labels)) == len(jpegs) // 2 * 2  # each file once, the odd one left out
    eval_x, eval_y = next(batches.eval(3))
    assert eval_x.shape == (3, 3, 224, 224) and eval_y.tolist() == [0, 1, 2]


def test_every_decoder_gives_pils_pixels_and_mixed_leaves_to_nvjpeg_only_what_it_decodes_exactly(tmp_path, jpegs):
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    for name, subsampling in (("444", 0), ("422", 1), ("420", 2)):
        Image.fromarray(pixels).save(tmp_path / f"{name}.JPEG", format="JPEG", quality=90, subsampling=subsampling)
    Image.fromarray(pixels).save(tmp_path / "progressive.JPEG", format="JPEG", subsampling=0, progressive=True)
    files = sorted(tmp_path.glob("*.JPEG")) + jpegs
    for decoder in DEVICE_DECODERS:
        batches = JpegBatches([(str(p), 0) for p in files], PAPER_224, CPU, workers=0, decoder=decoder)
        items = [batches.files[i] for i in range(len(files))]
        where = {path.name: on_device for path, (_, on_device, _) in zip(files, items)}
        expected_on_device = {
            "turbo": set(),
            "nvjpeg": {p.name for p in files},
            "mixed": {"444.JPEG"},  # baseline, colour, chroma not subsampled
            "nvimgcodec": {p.name for p in files} - {"cmyk.JPEG", "png_named_jpeg.JPEG"},  # every plain JPEG
        }[decoder]
        assert {name for name, on_device in where.items() if on_device} == expected_on_device, decoder
        images = batches._images([data for data, _, _ in items], [on_device for _, on_device, _ in items])
        for path, ours in zip(files, images):
            reference = pil_pixels(Image.open(path))
            assert ours.shape == reference.shape, (decoder, path.name)
            assert int((ours.int() - reference.int()).abs().max()) <= 1, (decoder, path.name)


def test_the_resize_matrices_compute_what_an_antialiased_interpolation_of_each_box_computes():
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in ((300, 200), (40, 50))]
    boxes = torch.tensor([[10, 20, 250, 150], [3, 5, 30, 20]])  # shrunk to 64, and enlarged
    flips = torch.tensor([False, True])
    ours = resized_crops(images, boxes, flips, 64)
    for k, (top, left, height, width) in enumerate(boxes.tolist()):
        box = images[k][:, top : top + height, left : left + width][None].float() / 255
        reference = torch.nn.functional.interpolate(box, size=(64, 64), mode="bilinear", antialias=True)[0]
        reference = reference.flip(-1) if flips[k] else reference
        assert float((ours[k] - reference.clamp(0, 1)).abs().max()) < 1e-5


def test_nvimgcodec_on_a_cpu_is_libjpeg_turbo_and_gives_pils_pixels_at_every_chroma_subsampling(tmp_path):
    """On a CPU nvImageCodec decodes with libjpeg-turbo: the same pixels as PIL, chroma interpolated; the GPU
    check compares its GPU decoding the same way (tests/gpu)."""
    rng = np.random.default_rng(3)
    ys, xs = np.mgrid[0:61, 0:83]
    pixels = np.clip(((ys + xs)[..., None] * rng.uniform(0.5, 2, 3)) % 256 + rng.normal(0, 12, (61, 83, 3)), 0, 255)
    files = []
    for name, subsampling in (("444", 0), ("422", 1), ("420", 2)):
        files.append(tmp_path / f"{name}.JPEG")
        Image.fromarray(pixels.astype(np.uint8)).save(files[-1], format="JPEG", quality=90, subsampling=subsampling)
    for path, ours in zip(files, decode([p.read_bytes() for p in files], CPU, "nvimgcodec")):
        assert torch.equal(ours, pil_pixels(Image.open(path))), path.name


def test_the_nvimgcodec_decoder_without_its_package_is_one_sentence_before_anything_reads(jpegs, monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)
    with pytest.raises(MissingInputError, match=r"needs NVIDIA's nvImageCodec, .* pip install nvidia-nvimgcodec-cu13"):
        jpeg_folder_batches([(str(p), 0) for p in jpegs], PAPER_224, CPU, 0, "nvimgcodec")


def test_a_decoder_that_does_not_exist_is_one_sentence():
    with pytest.raises(
        InputError, match="Unknown decoder 'gpu'; accepted: auto, pil, turbo, nvjpeg, mixed, nvimgcodec"
    ):
        resolve_decoder("gpu")
    with pytest.raises(InputError, match="Unknown decoder 'device'"):
        jpeg_folder_batches([], PAPER_224, CPU, 0, "device")
