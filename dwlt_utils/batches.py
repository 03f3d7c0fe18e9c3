"""Batches for the training loop and evaluation, from data that lives on the device or in image folders.

`ArrayBatches` holds a small data set whole on the device as uint8 and augments each batch there (the fast
path: no worker processes, no host copies). `FolderBatches` wraps a torchvision folder data set (ImageNet)
in a DataLoader with PIL transforms, for data too large to hold.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from .augment import Transforms
from .data import ImageArrays

Batch = tuple[torch.Tensor, torch.Tensor]  # float images in [0, 1] on the device, int64 labels


class Batches(Protocol):
    def __len__(self) -> int: ...
    def train(self, batch_size: int, generator: torch.Generator, drop_last: bool = False) -> Iterator[Batch]: ...
    def eval(self, batch_size: int) -> Iterator[Batch]: ...


class ArrayBatches:
    def __init__(self, arrays: ImageArrays, transforms: Transforms, device: torch.device):
        self.arrays = arrays.to(device)
        self.transforms = transforms
        self.device = device

    def __len__(self) -> int:
        return len(self.arrays)

    def train(self, batch_size: int, generator: torch.Generator, drop_last: bool = False) -> Iterator[Batch]:
        n = len(self.arrays)
        order = torch.randperm(n, generator=generator, device=self.device)
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

    def train(self, batch_size: int, generator: torch.Generator, drop_last: bool = False) -> Iterator[Batch]:
        # DataLoader shuffles with a CPU generator; derive it from the device one so that runs stay seeded.
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device).item())
        cpu_gen = torch.Generator().manual_seed(seed)
        return self._loader(self.train_set, batch_size, shuffle=True, drop_last=drop_last, generator=cpu_gen)

    def eval(self, batch_size: int) -> Iterator[Batch]:
        return self._loader(self.eval_set, batch_size, shuffle=False)
