"""What every notebook does first: validate the shared parameters and say where and how it runs."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from .cells import Paths, git_revision
from .engine import Precision
from .errors import InputError, check_number
from .profiles import Profile, get_profile


@dataclass(frozen=True)
class Session:
    profile: Profile
    seed: int
    device: torch.device
    paths: Paths

    def banner(self) -> str:
        cuda = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "no GPU in use"
        rev = git_revision() or "not a git checkout"
        label = "QUICK PROFILE (stand-in data, small model: not paper results)" if self.profile.name == "quick" \
            else "paper profile"
        return (f"dwlt {__version__} ({rev}), torch {torch.__version__}, Python {platform.python_version()}\n"
                f"{label}; device {self.device} ({cuda}); seed {self.seed}\n"
                f"data root {self.paths.data_root}; run root {self.paths.run_root}")


def _working_root() -> Path:
    """Where relative paths start: the current directory, except that a kernel JupyterLab starts inside
    the repository's notebooks/ folder resolves them from the repository root, as papermill run there does,
    so that both find the same runs/ and data/."""
    cwd = Path.cwd().resolve()
    repo = Path(__file__).resolve().parent.parent
    return repo if cwd == repo / "notebooks" else cwd


def start(*, quick: bool, seed: int, device: str, data_root: str, run_root: str, weights_dir: str = "weights",
          torch_compile: bool = False) -> Session:
    """Validate the parameters every notebook has; raises one clear sentence on bad input."""
    profile = get_profile(quick)
    check_number("seed", seed, 0, 2**31 - 1, integer=True)
    if not isinstance(device, str):
        raise InputError(f"device is a string ('auto', 'cpu', 'cuda', 'cuda:N'); got {device!r}.")
    paths = Paths.create(data_root, run_root, weights_dir, base=_working_root())
    if not isinstance(torch_compile, bool):
        raise InputError(f"torch_compile is True or False; got {torch_compile!r}.")
    session = Session(profile, seed, Precision.for_device(device, compile=torch_compile).device, paths)
    # A papermill job given a share of the machine's cores uses that share, not every core.
    threads = os.environ.get("DWLT_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    return session
