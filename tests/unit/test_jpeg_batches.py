"""ImageNet JPEGs decoded in batches and cropped on the device (`batches.JpegBatches`) against the reference:
PIL decoding and torchvision's per-image transforms of the same files, in the layouts ImageNet holds (RGB,
greyscale and CMYK JPEGs, and a PNG named .JPEG)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from dwlt_utils.augment import PAPER_224, sample_boxes
from dwlt_utils.batches import JpegBatches, JpegFiles, decode
from dwlt_utils.distributed import Ranks
from dwlt_utils.engine import generator_for

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
