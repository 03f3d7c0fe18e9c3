"""ImageNet's JPEGs decoded by NVIDIA's nvImageCodec, a batch in one call: the `nvimgcodec` decoder of `batches`.

On a GPU the batch is decoded on the device (on the hardware JPEG decoder where the chip has one), with the chroma of
subsampled files interpolated as libjpeg-turbo interpolates it (`:fancy_upsampling=1`). nvJPEG as torchvision calls
it does not interpolate and lands up to 92 grey levels from PIL; whether nvImageCodec's GPU decoding equals PIL within
2 grey levels is for the GPU check to show (tests/gpu), and until it has, a ladder that uses it names the decoder
among its deviations. On a CPU nvImageCodec runs libjpeg-turbo, PIL's own decoder: PIL's pixels (tests/unit).
EXIF orientation is left alone, as PIL's loader leaves it.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import numpy as np
import torch

from .errors import MissingInputError

PACKAGE = "nvidia-nvimgcodec-cu13"
OPTIONS = ":fancy_upsampling=1"


def codec() -> ModuleType:
    """nvImageCodec's Python module, or one sentence saying how to install it."""
    try:
        return importlib.import_module("nvidia.nvimgcodec")
    except ImportError:
        raise MissingInputError(
            f"The nvimgcodec decoder needs NVIDIA's nvImageCodec, which is not installed: pip install {PACKAGE}, "
            "or choose another decoder."
        ) from None


def available() -> bool:
    try:
        codec()
    except MissingInputError:
        return False
    return True


@functools.cache
def _decoder(device: torch.device):
    nvimgcodec = codec()
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return nvimgcodec.Decoder(device_id=index, options=OPTIONS)
    return nvimgcodec.Decoder(
        device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY, backends=[nvimgcodec.Backend(nvimgcodec.CPU_ONLY)]
    )


@functools.cache
def _params():
    nvimgcodec = codec()
    return nvimgcodec.DecodeParams(
        apply_exif_orientation=False,
        color_spec=nvimgcodec.ColorSpec.SRGB,
        sample_format=nvimgcodec.SampleFormat.P_RGB,  # planar: C×H×W, as torchvision decodes
    )


def decode_jpegs(data: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """JPEG files' bytes to uint8 RGB C×H×W tensors on `device`, the batch in one call; None for a file nvImageCodec
    cannot decode. On CUDA the decoding is ordered on the current stream and nothing waits for it."""
    nvimgcodec = codec()
    streams = [nvimgcodec.CodeStream(d) for d in data]
    if device.type != "cuda":
        decoded = _decoder(device).decode(streams, params=_params())
        return [None if image is None else torch.from_numpy(np.array(image.cpu())) for image in decoded]
    stream = torch.cuda.current_stream(device)
    decoded = _decoder(device).decode(streams, params=_params(), cuda_stream=stream.cuda_stream)
    return [None if image is None else torch.from_dlpack(image) for image in decoded]
