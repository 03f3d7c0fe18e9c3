"""Batches for the training loop and evaluation, from data that lives on the device or in image folders.

`ArrayBatches` holds a small data set whole on the device as uint8 and augments each batch there (the fast
path: no worker processes, no host copies). `FolderBatches` wraps a torchvision folder data set (ImageNet)
in a DataLoader with PIL transforms, for data too large to hold: the reference, as the official code reads
ImageNet. `JpegBatches` reads the same folders with the decoding split between the loader workers
(libjpeg-turbo, as PIL) and the device (nvJPEG, batched), and the protocol's crop and flip run on the device
batched, as for `ArrayBatches`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from io import BytesIO
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, JpegImagePlugin
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from torchvision.datasets.folder import default_loader
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from . import nvimgcodec_jpeg
from .augment import Transforms, antialiased_weights, sample_boxes
from .data import ImageArrays, pil_transforms
from .distributed import SINGLE, Ranks
from .errors import check_choice

Batch = tuple[torch.Tensor, torch.Tensor]  # float images in [0, 1] on the device, int64 labels
# How ImageNet's JPEGs become batches:
# - "pil": PIL decodes and transforms each image in DataLoader workers (`FolderBatches`): the official code's
#   way and the reference;
# - "turbo": the workers decode with libjpeg-turbo (PIL's decoder, the same pixels), the device crops;
# - "nvjpeg": every file is decoded on the device by nvJPEG, which is not PIL's decoder on chroma-subsampled
#   files (a deviation that the ladder's records name);
# - "mixed": nvJPEG for the files it decodes as libjpeg-turbo does, the workers for the rest;
# - "nvimgcodec": NVIDIA's nvImageCodec decodes every JPEG on the device, chroma interpolated as libjpeg-turbo
#   does (`nvimgcodec_jpeg`; not yet shown equal to PIL on a GPU: a deviation there until it is);
# - "auto": "pil" for now. The faster decoders are opt-in until a GPU check has shown them equal to PIL
#   (nvjpeg: its deviation) and faster (`python -m dwlt_utils.gpu_check`).
DECODERS = ("auto", "pil", "turbo", "nvjpeg", "mixed", "nvimgcodec")
DEVICE_DECODERS = ("turbo", "nvjpeg", "mixed", "nvimgcodec")
# What a ladder's records name when its decoder does not give PIL's pixels, or has not been shown to.
DECODER_DEVIATIONS = {
    "nvjpeg": "ImageNet JPEGs decoded by nvJPEG, which upsamples chroma without interpolation (up to 92 grey levels "
    "from PIL on 4:2:0 and 4:2:2 files)",
    "nvimgcodec": "ImageNet JPEGs decoded by nvImageCodec, not yet shown to give PIL's pixels on a GPU",
}


def resolve_decoder(decoder: str) -> str:
    """The decoder that "auto" stands for, or the one named (checked)."""
    check_choice("decoder", decoder, DECODERS)
    return "pil" if decoder == "auto" else decoder


class Batches(Protocol):
    def __len__(self) -> int: ...
    def train(
        self, batch_size: int, generator: torch.Generator, drop_last: bool = False, ranks: Ranks = SINGLE
    ) -> Iterator[Batch]: ...
    def eval(self, batch_size: int) -> Iterator[Batch]: ...


def _host_seed(generator: torch.Generator, salt: int = 0) -> int:
    """A seed derived from the generator's own seed (every rank's is the same), for the loaders' host-side
    shuffles and the ranks' streams. Drawing it from a CUDA generator would make the host wait for the device."""
    return (generator.initial_seed() * 1_000_003 + salt + 1) % (2**61 - 1)


def _rank_stream(generator: torch.Generator, ranks: Ranks) -> torch.Generator:
    """A generator of this rank's own, seeded from the shared one."""
    return torch.Generator(generator.device).manual_seed(_host_seed(generator, 1 + ranks.rank))


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


def loader_workers(processes: int = 1) -> int:
    """DataLoader workers for each of `processes` processes sharing this machine's cores: its share of them, less
    one for the process itself (at least one). JPEG decoding is what binds ImageNet training, so none is left
    idle."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // processes - 1)


class FolderBatches:
    """Train and eval data sets that return (float tensor in [0, 1], label) after their own PIL transforms."""

    def __init__(
        self, train_set: Dataset | None, eval_set: Dataset | None, device: torch.device, workers: int | None = None
    ):
        self.train_set, self.eval_set, self.device = train_set, eval_set, device
        self.workers = loader_workers() if workers is None else workers

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
        seed = _host_seed(generator)
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


class PilSamples(Dataset):
    """(transformed image, label) of an image folder's samples read by PIL, as torchvision's ImageFolder serves
    them: the reference decoder for any list of samples."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable):
        self.samples, self.transform = list(samples), transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return self.transform(default_loader(path)), label


# Where each file of a batch is decoded, decided in the loader worker that reads it.
ON_DEVICE, IN_WORKER = True, False


def _encoded(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _prepare(data: bytes, decoder: str) -> tuple[torch.Tensor | bytes, bool]:
    """A file as a loader worker hands it on: encoded for the device, or decoded there (uint8 RGB C×H×W).

    One look at the header decides both questions. Files that are not plain JPEGs (ImageNet's PNG and CMYK
    JPEGs) are decoded by PIL, as the reference loader reads them; JPEGs by libjpeg-turbo, PIL's own decoder,
    unless "nvimgcodec" leaves every one to the device, or "mixed" leaves to nvJPEG those it decodes as
    libjpeg-turbo does: baseline colour JPEGs whose chroma is not subsampled. On 4:2:0 and 4:2:2 files nvJPEG, as
    torchvision calls it, upsamples chroma without interpolation and lands up to 92 grey levels away (PROTOCOL.md
    section 10)."""
    if decoder == "nvjpeg":
        return _encoded(data), ON_DEVICE
    with Image.open(BytesIO(data)) as image:
        if image.format != "JPEG" or image.mode not in ("RGB", "L"):
            return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).contiguous(), IN_WORKER
        baseline = image.mode == "RGB" and not image.info.get("progressive")
        exact_on_device = baseline and JpegImagePlugin.get_sampling(image) == 0
    if decoder == "nvimgcodec":
        return data, ON_DEVICE  # nvImageCodec reads the bytes themselves
    if decoder == "mixed" and exact_on_device:
        return _encoded(data), ON_DEVICE
    return _decode_one(_encoded(data), torch.device("cpu")), IN_WORKER


class JpegFiles(Dataset):
    """(bytes or pixels, decoded on the device?, label) of an image folder's samples, as a loader worker
    prepares them for the decoder: "nvjpeg" leaves every file encoded for the device, "nvimgcodec" every plain
    JPEG, "turbo" decodes every file in the worker, "mixed" leaves encoded only the files that nvJPEG decodes as
    libjpeg-turbo does."""

    def __init__(self, samples: Sequence[tuple[str, int]], decoder: str = "nvjpeg"):
        check_choice("decoder", decoder, DEVICE_DECODERS)
        self.samples, self.decoder = list(samples), decoder

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool, int]:
        path, label = self.samples[i]
        return *_prepare(Path(path).read_bytes(), self.decoder), label


# A batch as the loader workers hand it over: each file encoded (a uint8 tensor, or bytes for nvImageCodec) or its
# pixels, whether the device decodes it, labels.
Prepared = tuple[list[torch.Tensor | bytes], list[bool], torch.Tensor]


def collate_files(items: list[tuple[torch.Tensor | bytes, bool, int]]) -> Prepared:
    """`JpegFiles` items as one batch (their images differ in size, so they stay a list)."""
    return [data for data, _, _ in items], [where for _, where, _ in items], torch.tensor([y for _, _, y in items])


def decode(data: list[torch.Tensor] | list[bytes], device: torch.device, decoder: str = "nvjpeg") -> list[torch.Tensor]:
    """Encoded images to uint8 RGB C×H×W tensors on `device`, a batch of JPEGs in one call: by torchvision's
    decoder (nvJPEG on CUDA) from uint8 tensors, or by nvImageCodec from the files' bytes (`decoder="nvimgcodec"`).
    A file that is not a JPEG (ImageNet's training set holds a PNG and CMYK JPEGs) is decoded on its own on the CPU."""
    if decoder == "nvimgcodec":
        decoded = nvimgcodec_jpeg.decode_jpegs(data, device)
        return [_decode_one(_encoded(d), device) if image is None else image for d, image in zip(data, decoded)]
    # torchvision 0.29 deprecates its decoders for TorchCodec's; they are what the pinned torchvision has, and
    # this function is the one place to change when they go.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            return [_decode_one(d, device) for d in data]


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            return decode_image(data, mode=ImageReadMode.RGB).to(device)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor copied to `device` without making the host wait: from pinned memory on CUDA."""
    if device.type == "cuda" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


class JpegBatches:
    """Batches of an image folder's samples (path, label) decoded by `decoder` (one of DEVICE_DECODERS) and
    cropped on the device."""

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        transforms: Transforms,
        device: torch.device,
        workers: int | None = None,
        decoder: str = "nvjpeg",
    ):
        self.files, self.transforms, self.device = JpegFiles(samples, decoder), transforms, device
        self.workers = loader_workers() if workers is None else workers
        if decoder == "nvimgcodec":
            nvimgcodec_jpeg.codec()  # not installed: one sentence now, before anything trains

    def __len__(self) -> int:
        return len(self.files)

    def _loader(self, batch_size: int, sampler, drop_last: bool) -> Iterator[Prepared]:
        loader = DataLoader(
            self.files,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.workers,
            collate_fn=collate_files,
            drop_last=drop_last,
            pin_memory=self.device.type == "cuda",
        )
        for data, where, labels in loader:
            yield data, where, to_device(labels, self.device)

    def _images(self, data: list[torch.Tensor | bytes], where: list[bool]) -> list[torch.Tensor]:
        """The batch's images on the device, in order: the encoded ones decoded there in one call, the ones the
        workers decoded copied over."""
        encoded = [k for k, on_device in enumerate(where) if on_device]
        images = [to_device(d, self.device) if not on_device else None for d, on_device in zip(data, where)]
        decoded = decode([data[k] for k in encoded], self.device, self.files.decoder) if encoded else []
        for k, image in zip(encoded, decoded):
            images[k] = image
        return images

    def train(
        self, batch_size: int, generator: torch.Generator, drop_last: bool = False, ranks: Ranks = SINGLE
    ) -> Iterator[Batch]:
        """RandomResizedCrop + flip of shuffled batches (this rank's shards of them on several ranks)."""
        seed = _host_seed(generator)
        if ranks.world == 1:
            sampler = RandomSampler(self.files, generator=torch.Generator().manual_seed(seed))
        else:
            sampler = DistributedSampler(self.files, ranks.world, ranks.rank, shuffle=True, seed=seed, drop_last=True)
            generator = _rank_stream(generator, ranks)
        for data, where, labels in self._loader(ranks.batch_size(batch_size), sampler, drop_last):
            yield self.train_batch(data, where, generator), labels

    def train_batch(
        self, data: list[torch.Tensor | bytes], where: list[bool], generator: torch.Generator
    ) -> torch.Tensor:
        """The main process's part of a training batch that the workers prepared (`collate_files`): the device
        decodes what they left encoded, the rest is copied over, then every image is cropped and flipped."""
        return self.crop_flip(self._images(data, where), generator)

    def crop_flip(self, images: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """The protocol's RandomResizedCrop + flip of images of assorted sizes: boxes and flips drawn for the
        whole batch as `augment.random_resized_crop_flip` draws them, then each box resized with antialiasing
        as PIL resizes it (ImageNet boxes are mostly shrunk, where sampling without it would alias). The sizes
        go to the device once; nothing comes back."""
        n, size = len(images), self.transforms.size
        sizes = to_device(torch.tensor([image.shape[1:] for image in images], dtype=torch.float32), self.device)
        boxes = sample_boxes(
            n, sizes[:, 0], sizes[:, 1], scale=self.transforms.scale, generator=generator, device=self.device
        )
        flips = torch.rand(n, generator=generator, device=self.device) < 0.5
        return resized_crops(images, boxes, flips, size)

    def eval(self, batch_size: int) -> Iterator[Batch]:
        """Resize (the shorter side) + CenterCrop, image by image."""
        for data, where, labels in self._loader(batch_size, None, False):
            yield torch.stack([self._resize_center_crop(image) for image in self._images(data, where)]), labels

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
    float32 N×C×size×size in [0, 1] on the images' device. The resize is two matrix products per image with
    `augment.antialiased_weights` (the flip folded into the column weights), so boxes and flips never leave
    the device."""
    top, left, height, width = boxes.unbind(1)
    rows = antialiased_weights(top, height, size, max(image.shape[1] for image in images))
    columns = antialiased_weights(left, width, size, max(image.shape[2] for image in images))
    columns = torch.where(flips[:, None, None], columns.flip(1), columns)
    out = torch.empty((len(images), images[0].shape[0], size, size), device=images[0].device)
    for k, image in enumerate(images):
        h, w = image.shape[1:]
        out[k] = rows[k, :, :h] @ image.float() @ columns[k, :, :w].T
    return out.div_(255).clamp_(0.0, 1.0)


def _resized(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A uint8 C×H×W image resized (bilinear, antialiased as PIL) to 1×C×size, float32 in [0, 1]."""
    x = F.interpolate(image[None].float().div_(255), size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0.0, 1.0)


def jpeg_folder_batches(
    samples: Sequence[tuple[str, int]], transforms: Transforms, device: torch.device, workers: int, decoder: str
) -> Batches:
    """Training batches of an image folder's samples through `decoder` (a resolved one of DECODERS)."""
    check_choice("decoder", decoder, DECODERS[1:])
    if decoder == "pil":
        return FolderBatches(PilSamples(samples, pil_transforms(transforms.size, train=True)), None, device, workers)
    return JpegBatches(samples, transforms, device, workers, decoder)
