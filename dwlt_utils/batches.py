"""Batches for the training loop and evaluation, from data that lives on the device or in image folders.

`ArrayBatches` holds a small data set whole on the device as uint8 and augments each batch there (the fast
path: no worker processes, no host copies). `FolderBatches` wraps a torchvision folder data set (ImageNet)
in a DataLoader with PIL transforms, for data too large to hold: the reference, as the official code reads
ImageNet. `JpegBatches` reads the same folders faster: loader workers only read each file's bytes, a batch
of JPEGs is decoded at once on the device (nvJPEG on CUDA), and the protocol's crop and flip run there
batched, as for `ArrayBatches`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from .augment import Transforms, sample_boxes
from .data import ImageArrays
from .distributed import SINGLE, Ranks

Batch = tuple[torch.Tensor, torch.Tensor]  # float images in [0, 1] on the device, int64 labels
# How ImageNet's JPEGs become batches: "pil" (`FolderBatches`, the reference), "device" (`JpegBatches`), or
# "auto": on the device where it is a GPU, else PIL.
DECODERS = ("auto", "pil", "device")


class Batches(Protocol):
    def __len__(self) -> int: ...
    def train(
        self, batch_size: int, generator: torch.Generator, drop_last: bool = False, ranks: Ranks = SINGLE
    ) -> Iterator[Batch]: ...
    def eval(self, batch_size: int) -> Iterator[Batch]: ...


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(2**62, (1,), generator=generator, device=generator.device).item())


def _rank_stream(generator: torch.Generator, ranks: Ranks) -> torch.Generator:
    """A generator of this rank's own, seeded from the shared one (every rank draws the same seed)."""
    return torch.Generator(generator.device).manual_seed(_draw_seed(generator) + 1 + ranks.rank)


class ArrayBatches:
    def __init__(self, arrays: ImageArrays, transforms: Transforms, device: torch.device):
        self.arrays = arrays.to(device)
        self.transforms = transforms
        self.device = device

    def __len__(self) -> int:
        return len(self.arrays)

    def train(
        self, batch_size: int, generator: torch.Generator, drop_last: bool = False, ranks: Ranks = SINGLE
    ) -> Iterator[Batch]:
        """Shuffled, augmented batches; on several ranks, this rank's shard of each global batch of
        `batch_size` (`Ranks.shard`), augmented from a stream of its own."""
        order = ranks.shard(torch.randperm(len(self.arrays), generator=generator, device=self.device))
        if ranks.world > 1:
            generator = _rank_stream(generator, ranks)
        batch_size = ranks.batch_size(batch_size)
        n = len(order)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield self.transforms.train_batch(self.arrays.images[idx], generator), self.arrays.labels[idx]

    def eval(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self.arrays), batch_size):
            end = start + batch_size
            yield self.transforms.eval_batch(self.arrays.images[start:end]), self.arrays.labels[start:end]


class FolderBatches:
    """Train and eval data sets that return (float tensor in [0, 1], label) after their own PIL transforms."""

    def __init__(
        self, train_set: Dataset | None, eval_set: Dataset | None, device: torch.device, workers: int | None = None
    ):
        self.train_set, self.eval_set, self.device = train_set, eval_set, device
        self.workers = min(8, os.cpu_count() or 1) if workers is None else workers

    def __len__(self) -> int:
        return len(self.train_set if self.train_set is not None else self.eval_set)

    def _loader(self, dataset: Dataset, batch_size: int, **kwargs) -> Iterator[Batch]:
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            **kwargs,
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train(
        self, batch_size: int, generator: torch.Generator, drop_last: bool = False, ranks: Ranks = SINGLE
    ) -> Iterator[Batch]:
        # DataLoader shuffles with a CPU generator; derive it from the device one so that runs stay seeded.
        seed = _draw_seed(generator)
        if ranks.world == 1:
            cpu_gen = torch.Generator().manual_seed(seed)
            return self._loader(self.train_set, batch_size, shuffle=True, drop_last=drop_last, generator=cpu_gen)
        # Every rank draws the same seed, so their samplers share one permutation; the loaders' workers get
        # seeds of their own for the random crops.
        sampler = DistributedSampler(self.train_set, ranks.world, ranks.rank, shuffle=True, seed=seed, drop_last=True)
        own = torch.Generator().manual_seed(seed + 1 + ranks.rank)
        return self._loader(
            self.train_set, ranks.batch_size(batch_size), sampler=sampler, drop_last=drop_last, generator=own
        )

    def eval(self, batch_size: int) -> Iterator[Batch]:
        return self._loader(self.eval_set, batch_size, shuffle=False)


class JpegFiles(Dataset):
    """(file bytes as a uint8 tensor, label) of an image folder's samples: all a loader worker does."""

    def __init__(self, samples: Sequence[tuple[str, int]]):
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8), label


def _bytes_and_labels(items: list[tuple[torch.Tensor, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [data for data, _ in items], torch.tensor([label for _, label in items])


def decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Encoded images to uint8 RGB C×H×W tensors on `device`, a batch of JPEGs in one call; a file that is not
    a JPEG (ImageNet's training set holds a PNG and CMYK JPEGs) is decoded on its own on the CPU."""
    # torchvision 0.29 deprecates its decoders for TorchCodec's; they are what the pinned torchvision has, and
    # this function is the one place to change when they go.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            return [_decode_one(d, device) for d in data]


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return decode_image(data, mode=ImageReadMode.RGB).to(device)


class JpegBatches:
    """Training batches of an image folder's samples (path, label), decoded and augmented on the device."""

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        transforms: Transforms,
        device: torch.device,
        workers: int | None = None,
    ):
        self.files, self.transforms, self.device = JpegFiles(samples), transforms, device
        self.workers = min(8, os.cpu_count() or 1) if workers is None else workers

    def __len__(self) -> int:
        return len(self.files)

    def _loader(self, batch_size: int, sampler, drop_last: bool) -> DataLoader:
        return DataLoader(
            self.files,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.workers,
            collate_fn=_bytes_and_labels,
            drop_last=drop_last,
        )

    def train(
        self, batch_size: int, generator: torch.Generator, drop_last: bool = False, ranks: Ranks = SINGLE
    ) -> Iterator[Batch]:
        """RandomResizedCrop + flip of shuffled batches (this rank's shards of them on several ranks)."""
        seed = _draw_seed(generator)
        if ranks.world == 1:
            sampler = RandomSampler(self.files, generator=torch.Generator().manual_seed(seed))
        else:
            sampler = DistributedSampler(self.files, ranks.world, ranks.rank, shuffle=True, seed=seed, drop_last=True)
            generator = _rank_stream(generator, ranks)
        for data, labels in self._loader(ranks.batch_size(batch_size), sampler, drop_last):
            yield self.crop_flip(decode(data, self.device), generator), labels.to(self.device, non_blocking=True)

    def crop_flip(self, images: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """The protocol's RandomResizedCrop + flip of images of assorted sizes: boxes and flips drawn for the
        whole batch as `augment.random_resized_crop_flip` draws them, then each box resized with antialiasing
        as PIL resizes it (ImageNet boxes are mostly shrunk, where sampling without it would alias)."""
        n, size = len(images), self.transforms.size
        heights = torch.tensor([i.shape[1] for i in images], device=self.device)
        widths = torch.tensor([i.shape[2] for i in images], device=self.device)
        boxes = sample_boxes(n, heights, widths, scale=self.transforms.scale, generator=generator, device=self.device)
        flips = torch.rand(n, generator=generator, device=self.device) < 0.5
        return resized_crops(images, boxes, flips, size)

    def eval(self, batch_size: int) -> Iterator[Batch]:
        """Resize (the shorter side) + CenterCrop, image by image."""
        for data, labels in self._loader(batch_size, None, False):
            images = [self._resize_center_crop(image) for image in decode(data, self.device)]
            yield torch.stack(images), labels.to(self.device, non_blocking=True)

    def _resize_center_crop(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[1:]
        resize, size = self.transforms.resize, self.transforms.size
        short = min(height, width)
        new = (resize, int(resize * width / height)) if height == short else (int(resize * height / width), resize)
        x = _resized(image, new)
        top, left = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
        return x[0, :, top : top + size, left : left + size]


def resized_crops(images: list[torch.Tensor], boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """Each uint8 image's box (top, left, height, width) resized to size×size, mirrored where `flips` says:
    float32 N×C×size×size in [0, 1] on the images' device."""
    out = torch.empty((len(images), images[0].shape[0], size, size), device=images[0].device)
    for k, ((top, left, height, width), flip) in enumerate(zip(boxes.tolist(), flips.tolist())):
        out[k] = _resized(images[k][:, top : top + height, left : left + width], (size, size))[0]
        if flip:
            out[k] = out[k].flip(-1)
    return out


def _resized(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A uint8 C×H×W image resized (bilinear, antialiased as PIL) to 1×C×size, float32 in [0, 1]."""
    x = F.interpolate(image[None].float().div_(255), size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0.0, 1.0)
