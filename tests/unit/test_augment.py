import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from dwlt_utils.augment import (
    PAPER_224,
    Transforms,
    crop_resize,
    random_crop_flip,
    resize_center_crop,
    sample_boxes,
)
from dwlt_utils.errors import InputError


@pytest.fixture()
def images():
    return torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def test_batched_crop_matches_torchvisions_resized_crop_of_the_same_box(images):
    boxes = sample_boxes(len(images), 32, 32, generator=torch.Generator().manual_seed(1))
    flip = torch.arange(len(images)) % 2 == 0
    ours = crop_resize(images, boxes, 224, flip)
    for image, box, flipped, out in zip(images, boxes, flip, ours):
        top, left, h, w = box.tolist()
        tensor_ref = TF.resized_crop(image.float() / 255, top, left, h, w, [224, 224], antialias=True)
        pil_ref = TF.to_tensor(TF.resized_crop(to_pil(image), top, left, h, w, [224, 224]))
        if flipped:
            tensor_ref, pil_ref = TF.hflip(tensor_ref), TF.hflip(pil_ref)
        assert (out - tensor_ref).abs().max().item() < 1e-5
        # PIL resamples in 8-bit fixed point and rounds: one grey level at most.
        assert (out - pil_ref).abs().max().item() <= 1 / 255 + 1e-6


def test_boxes_are_drawn_like_torchvisions_random_resized_crop():
    n = 20000
    ours = sample_boxes(n, 32, 32, generator=torch.Generator().manual_seed(2)).float()
    torch.manual_seed(3)
    image = torch.zeros(3, 32, 32)
    theirs = torch.tensor(
        [T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]
    ).float()
    assert ((ours[:, 0] + ours[:, 2]) <= 32).all() and ((ours[:, 1] + ours[:, 3]) <= 32).all()
    assert (ours >= 0).all() and (ours[:, 2:] >= 1).all()
    # same distribution: means and spreads of top, left, height, width within sampling noise
    assert torch.allclose(ours.mean(0), theirs.mean(0), atol=0.25)
    assert torch.allclose(ours.std(0), theirs.std(0), atol=0.25)
    area = ours[:, 2] * ours[:, 3] / 1024
    assert area.min() >= 0.08 * 0.5 and area.max() <= 1.0


def test_box_fallback_is_the_centre_crop():
    boxes = sample_boxes(5, 20, 40, scale=(2.0, 3.0), generator=torch.Generator().manual_seed(0))
    # nothing of 2-3× the area fits: torchvision falls back to the largest centred box of ratio ≤ 4/3
    theirs = T.RandomResizedCrop.get_params(torch.zeros(3, 20, 40), [2.0, 3.0], [3 / 4, 4 / 3])
    assert boxes.tolist() == [list(theirs)] * 5 == [[0, 6, 20, 27]] * 5


def test_eval_transform_matches_resize_and_center_crop(images):
    ours = resize_center_crop(images, 256, 224)
    assert ours.shape == (24, 3, 224, 224)
    for image, out in zip(images[:6], ours[:6]):
        pil_ref = TF.to_tensor(TF.center_crop(TF.resize(to_pil(image), 256), 224))
        assert (out - pil_ref).abs().max().item() <= 1 / 255 + 1e-6
        tensor_ref = TF.center_crop(TF.resize(image.float() / 255, 256, antialias=True), 224)
        assert (out - tensor_ref).abs().max().item() < 1e-5


def test_random_crop_with_padding_is_a_crop_of_the_padded_image(images):
    out = random_crop_flip(images[:6], 32, 4, generator=torch.Generator().manual_seed(4))
    padded = F.pad(images[:6].float() / 255, (4, 4, 4, 4))
    for crop, source in zip(out, padded):
        candidates = [
            view
            for top in range(9)
            for left in range(9)
            for view in (
                source[:, top : top + 32, left : left + 32],
                source[:, top : top + 32, left : left + 32].flip(-1),
            )
        ]
        assert any(torch.equal(crop, c) for c in candidates)


def test_training_transforms_are_seeded(images):
    a = PAPER_224.train_batch(images, torch.Generator().manual_seed(9))
    b = PAPER_224.train_batch(images, torch.Generator().manual_seed(9))
    c = PAPER_224.train_batch(images, torch.Generator().manual_seed(10))
    assert a.shape == (24, 3, 224, 224) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= a.min().item() and a.max().item() <= 1.0


def test_unknown_transform_and_non_square_eval_are_refused():
    with pytest.raises(InputError, match="accepted"):
        Transforms(train="autoaugment", size=32, resize=32)
    with pytest.raises(InputError, match="square"):
        resize_center_crop(torch.zeros(1, 3, 32, 40, dtype=torch.uint8), 36, 32)
