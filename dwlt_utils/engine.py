"""Where and in what precision the work runs.

On CUDA the defaults are bf16 autocast and channels_last (ResNet convolutions run fastest so); on the CPU,
plain fp32 in the default layout, which is also the setting that the equivalence tests pin down.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn as nn

from .errors import InputError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" → the first CUDA device when there is one, else the CPU; anything else must exist."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"Unknown device {device!r}; accepted: 'auto', 'cpu', 'cuda', 'cuda:N'.") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"Device {device!r} was asked for but this machine has no CUDA device; use 'auto' or 'cpu'.")
    return resolved


@dataclass(frozen=True)
class Precision:
    """Device, numeric precision, memory layout and compilation of the training step."""

    device: torch.device
    bf16: bool
    channels_last: bool
    compile: bool = False
    # Full training batches replayed as one CUDA graph (`train.GraphedStep`): opt-in until a GPU check has shown
    # it correct and faster (`python -m dwlt_utils.gpu_check`).
    cuda_graphs: bool = False

    @classmethod
    def for_device(
        cls,
        device: torch.device | str,
        *,
        bf16: bool | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
        cuda_graphs: bool = False,
    ) -> Precision:
        device = resolve_device(device)
        cuda = device.type == "cuda"
        channels_last = cuda if channels_last is None else channels_last
        if not cuda and (channels_last or compile or cuda_graphs):
            # With torch 2.14's CPU kernels both corrupt the heap within a few training steps (channels_last
            # ResNets; compiled graphs once the batch size changes), and on a CPU neither would pay off.
            raise InputError(
                "channels_last, torch.compile and CUDA graphs are for CUDA devices; on a CPU leave them off."
            )
        if compile and cuda_graphs:
            raise InputError("Choose torch.compile or CUDA graphs, not both: each captures the step its own way.")
        return cls(device, cuda if bf16 is None else bf16, channels_last, compile, cuda_graphs)

    def autocast(self) -> AbstractContextManager:
        # A captured graph must not hold autocast's cache of cast weights: it would replay stale copies.
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=not self.cuda_graphs
        )

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare(self, model: nn.Module) -> nn.Module:
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def compiled(self, model: nn.Module) -> nn.Module:
        """The module that runs the forward passes: `torch.compile`d when asked for. It shares the model's
        parameters and mode, so state dicts and checkpoints keep coming from `model` itself."""
        return torch.compile(model) if self.compile else model

    @property
    def name(self) -> str:
        """The numeric precision as records name it: "bf16" (autocast) or "fp32"."""
        return "bf16" if self.bf16 else "fp32"

    def describe(self) -> str:
        parts = [self.device.type, "bf16 autocast" if self.bf16 else "fp32"]
        parts += ["channels_last"] * self.channels_last + ["torch.compile"] * self.compile
        parts += ["CUDA graphs"] * self.cuda_graphs
        return ", ".join(parts)


def generator_for(device: torch.device, *keys: int) -> torch.Generator:
    """A generator on `device` seeded from integer keys (seed, epoch, ...): the same keys, the same stream,
    which is what makes an interrupted run resume into exactly the uninterrupted one."""
    seed = 0
    for key in keys:
        seed = (seed * 1_000_003 + int(key) + 1) % (2**61 - 1)
    return torch.Generator(device=device).manual_seed(seed)
