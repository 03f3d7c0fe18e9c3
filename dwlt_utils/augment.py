"""Augmentation batched on the device, for uint8 N×C×H×W images that live there whole.

The protocol's transforms, one resampling call per batch:
- train: RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3)) + horizontal flip, as one
  `grid_sample` over a per-sample grid that spreads the output over the sampled box (the flip reverses its
  columns); boxes are drawn with torchvision's rule (ten tries, then the centre crop);
- eval: Resize(resize) + CenterCrop(size);
- the 32 px variant: RandomCrop(32, padding=4) + flip, as one gather.
Bilinear sampling at pixel centres with edge clamping is what PIL's bilinear upscaling computes, so the
result matches torchvision's transforms of the same box up to PIL's 8-bit rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .errors import InputError

_TRIES = 10


def _unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float32 in [0, 1]; float images as float32 unchanged."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def _uniform(shape: tuple[int, ...], low: float, high: float, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device) * (high - low) + low


def _per_image(size: int | torch.Tensor, n: int, device: torch.device | str) -> torch.Tensor:
    """A size as n float32 values on `device`. A Python number is filled in there: copying it over (as
    `torch.as_tensor(size, device=...)` does) would make the host wait for a CUDA device at every batch."""
    if isinstance(size, torch.Tensor):
        return size.to(dtype=torch.float32).expand(n)
    return torch.full((n,), float(size), device=device)


def sample_boxes(
    n: int,
    height: int | torch.Tensor,
    width: int | torch.Tensor,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Integer crop boxes (top, left, height, width), n×4, drawn as torchvision's RandomResizedCrop does:
    up to ten (area, log-ratio) tries per image, the first that fits wins, else the centre crop. `height`
    and `width` are one size for all, or each image's (tensors of n, on `device` already)."""
    height, width = _per_image(height, n, device), _per_image(width, n, device)
    area = _uniform((n, _TRIES), scale[0], scale[1], generator, device) * (height * width)[:, None]
    log_r = _uniform((n, _TRIES), math.log(ratio[0]), math.log(ratio[1]), generator, device)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first fitting try
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    # The fallback: the largest centred box whose aspect ratio is within `ratio` (round half to even, as
    # Python's round).
    in_ratio = width / height
    narrow, wide = in_ratio < ratio[0], in_ratio > ratio[1]
    fb_w = torch.where(wide, torch.round(height * ratio[1]), width)
    fb_h = torch.where(narrow, torch.round(width / ratio[0]), height)
    any_fit = fits.any(dim=1)
    w = torch.where(any_fit, w, fb_w)
    h = torch.where(any_fit, h, fb_h)
    u = torch.rand((n, 2), generator=generator, device=device)
    top = torch.where(
        any_fit, torch.floor(u[:, 0] * (height - h + 1)), torch.div(height - fb_h, 2, rounding_mode="floor")
    )
    left = torch.where(
        any_fit, torch.floor(u[:, 1] * (width - w + 1)), torch.div(width - fb_w, 2, rounding_mode="floor")
    )
    return torch.stack([top, left, h, w], dim=1).long()


def _sample_coords(start: torch.Tensor, length: torch.Tensor, size: int, extent: int) -> torch.Tensor:
    """Normalised grid coordinates (n×size) of `size` output pixel centres spread over each box
    [start, start + length), clamped to the box's own edge pixels: torchvision crops first, then resizes."""
    centres = (torch.arange(size, device=start.device, dtype=start.dtype) + 0.5) / size
    coords = start[:, None] + length[:, None] * centres - 0.5
    coords = torch.minimum(torch.maximum(coords, start[:, None]), (start + length - 1)[:, None])
    return (2 * coords + 1) / extent - 1


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Each image's box resampled to size×size (bilinear at pixel centres), optionally mirrored.

    images: uint8 or float N×C×H×W; boxes: N×4 (top, left, height, width); returns float32 in [0, 1].
    """
    n, _, height, width = images.shape
    x = _unit_float(images)
    top, left, h, w = boxes.to(x.dtype).unbind(1)
    gx = _sample_coords(left, w, size, width)
    if flip is not None:
        gx = torch.where(flip[:, None], gx.flip(1), gx)
    gy = _sample_coords(top, h, size, height)
    grid = torch.stack([gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def antialiased_weights(start: torch.Tensor, length: torch.Tensor, size: int, extent: int) -> torch.Tensor:
    """N×size×extent weights that resample each box [start, start + length) of an axis of `extent` pixels to
    `size` pixels as PIL's antialiased bilinear resize of the cropped box does (torchvision crops, then
    resizes): a triangle as wide as the scale factor when shrinking, plain bilinear when enlarging, each
    output pixel's taps clipped to the box as PIL clips them and normalised. Box coordinates stay on the
    device, so no size is ever read back to the host."""
    start, length = start.float(), length.float()
    scale = length / size
    support = scale.clamp(min=1.0)[:, None]  # the triangle's half-width, in input pixels
    centre = (torch.arange(size, device=start.device) + 0.5)[None, :] * scale[:, None]  # N×size, box coordinates
    first = torch.trunc(centre - support + 0.5).clamp(min=0)
    stop = torch.minimum(torch.trunc(centre + support + 0.5), length[:, None])
    pixel = torch.arange(extent, device=start.device)[None, None, :] - start[:, None, None]  # N×1×extent
    weights = (1 - ((pixel + 0.5 - centre[..., None]) / support[..., None]).abs()).clamp(min=0)
    weights = weights * ((pixel >= first[..., None]) & (pixel < stop[..., None]))
    return weights / weights.sum(-1, keepdim=True)


def random_resized_crop_flip(
    images: torch.Tensor,
    size: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RandomResizedCrop(size, scale) + RandomHorizontalFlip for a whole batch, float32 out."""
    n, _, height, width = images.shape
    boxes = sample_boxes(n, height, width, scale=scale, generator=generator, device=images.device)
    flip = torch.rand(n, generator=generator, device=images.device) < 0.5
    return crop_resize(images, boxes, size, flip)


def resize_center_crop(images: torch.Tensor, resize: int, size: int) -> torch.Tensor:
    """Resize(resize) + CenterCrop(size) for square images, float32 out (antialiased when shrinking, as PIL)."""
    height, width = images.shape[-2:]
    if height != width:
        raise InputError(f"resize_center_crop takes square images; got {height}×{width}.")
    x = _unit_float(images)
    if resize != height:
        x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False, antialias=True)
    start = int(round((resize - size) / 2.0))  # torchvision's CenterCrop offset
    return x[..., start : start + size, start : start + size].clamp_(0.0, 1.0)


def random_crop_flip(
    images: torch.Tensor, size: int, padding: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """RandomCrop(size, padding, zero fill) + RandomHorizontalFlip for a whole batch, float32 out."""
    n, _, height, width = images.shape
    x = _unit_float(images)
    x = F.pad(x, (padding,) * 4)
    top = torch.floor(torch.rand(n, generator=generator, device=x.device) * (height + 2 * padding - size + 1)).long()
    left = torch.floor(torch.rand(n, generator=generator, device=x.device) * (width + 2 * padding - size + 1)).long()
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    steps = torch.arange(size, device=x.device)
    rows = top[:, None] + steps  # n×size
    cols = torch.where(flip[:, None], left[:, None] + size - 1 - steps, left[:, None] + steps)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # n×size×size×C
    return out.permute(0, 3, 1, 2).contiguous()


@dataclass(frozen=True)
class Transforms:
    """The train and eval transforms of one input pipeline.

    train: "rrc" (RandomResizedCrop + flip), "crop" (RandomCrop with padding + flip) or "none";
    eval: Resize(resize) + CenterCrop(size) (with resize == size == native size it is the identity).
    """

    train: str
    size: int
    resize: int
    padding: int = 4
    scale: tuple[float, float] = (0.08, 1.0)

    def __post_init__(self) -> None:
        if self.train not in ("rrc", "crop", "none"):
            raise InputError(f"Unknown train transform {self.train!r}; accepted: 'rrc', 'crop', 'none'.")

    def train_batch(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.train == "rrc":
            return random_resized_crop_flip(images, self.size, scale=self.scale, generator=generator)
        if self.train == "crop":
            return random_crop_flip(images, self.size, self.padding, generator=generator)
        return self.eval_batch(images)

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        return resize_center_crop(images, self.resize, self.size)

    def without_center_crop(self) -> Transforms:
        """Evaluation by Resize(size) alone: the whole image, none of its border cropped away."""
        return replace(self, resize=self.size)


# The protocol's pipelines (PROTOCOL.md §4, §7) and the quick profile's scaled copies of them.
PAPER_224 = Transforms(train="rrc", size=224, resize=256)
PAPER_32 = Transforms(train="crop", size=32, resize=32)
QUICK_16 = Transforms(train="rrc", size=16, resize=18)
QUICK_8 = Transforms(train="crop", size=8, resize=8, padding=1)  # PAPER_32 on the quick stand-in's 8 px images
