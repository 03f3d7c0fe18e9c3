"""What every notebook does first: validate the shared parameters, resolve where and how the work runs
once, and say so in a banner. The resulting `Session` is what the notebooks hand to the step modules."""

from __future__ import annotations

import ast
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from .engine import Precision
from .errors import InputError, check_choice, check_number, explain_os_errors_in_ipython
from .paths import Roots, resolve_folder
from .profiles import Profile, get_profile
from .results import git_revision
from .vocabulary import PRECISIONS


@dataclass(frozen=True)
class Session:
    """A notebook's resolved settings: the profile, the seed, the device and precision (with compilation),
    the folders, and how training shows its progress (`train.PROGRESS`)."""

    profile: Profile
    seed: int
    precision: Precision
    roots: Roots
    progress: str = "phases"
    working_root: Path = Path(".")  # where the notebook's relative folders start

    @property
    def device(self) -> torch.device:
        return self.precision.device

    def folder(self, name: str, value: str, *, optional: bool = False) -> Path | None:
        """Another folder parameter of the notebook (results_dir, imagenet_root), resolved like its roots;
        None for an `optional` one left empty."""
        if optional and value == "":
            return None
        return resolve_folder(name, value, self.working_root)

    def banner(self) -> str:
        cuda = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "no GPU in use"
        rev = git_revision() or "not a git checkout"
        return (
            f"dwlt {__version__} ({rev}), torch {torch.__version__}, Python {platform.python_version()}\n"
            f"{self.profile.label}; device {self.device} ({cuda}), {self.precision.describe()}; seed {self.seed}\n"
            f"data root {self.roots.data_root}; run root {self.roots.run_root}"
        )


def _notebook_folder() -> Path:
    """The folder of the running notebook: a Jupyter server names the notebook in `JPY_SESSION_NAME` when it
    starts the kernel; elsewhere (papermill, scripts) the current directory stands for it."""
    session = os.environ.get("JPY_SESSION_NAME")
    if session and Path(session).is_absolute():
        return Path(session).resolve().parent
    return Path.cwd().resolve()


def working_root() -> Path:
    """Where relative folders start. A notebook opened in a dwlt checkout's `notebooks/` (where JupyterLab
    starts its kernel) resolves them from that checkout's root, as papermill run from the root does, so both
    find the same runs/ and data/; anywhere else, from the current directory."""
    folder = _notebook_folder()
    if folder.name == "notebooks" and (folder.parent / "dwlt_utils" / "__init__.py").is_file():
        return folder.parent
    return Path.cwd().resolve()


def _assigned(source: str) -> list[str]:
    """The names a cell of assignments assigns, in order."""
    targets = [
        n.target if isinstance(n, ast.AnnAssign) else n.targets[0]
        for n in ast.parse(source).body
        if isinstance(n, (ast.Assign, ast.AnnAssign))
    ]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def check_injected_parameters() -> None:
    """Refuse parameters the notebook does not have. papermill only warns about them and injects them anyway,
    in a cell of its own right after the parameters cell; the kernel's input history holds both."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    history = list(shell.user_ns.get("In", [])) if shell is not None else []
    injected = [i for i, cell in enumerate(history) if i > 0 and cell.lstrip().startswith("# Parameters")]
    if not injected:
        return
    declared = _assigned(history[injected[-1] - 1])
    unknown = [name for name in _assigned(history[injected[-1]]) if name not in declared]
    if unknown:
        raise InputError(
            f"Unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: this notebook takes "
            f"{', '.join(declared)}."
        )


def _progress() -> str:
    """A live bar where a person watches (a kernel started by a Jupyter server), one line per finished
    phase where nobody does (papermill, nbconvert, CI), so rendered notebooks stay readable."""
    return "bar" if os.environ.get("JPY_SESSION_NAME") else "phases"


def start(
    *,
    quick: bool,
    seed: int,
    device: str,
    data_root: str,
    run_root: str,
    weights_dir: str = "weights",
    precision: str = "auto",
    torch_compile: bool = False,
    cuda_graphs: bool = False,
) -> Session:
    """Validate the parameters every notebook has and resolve them; raises one clear sentence on bad input,
    parameters the notebook does not have included. From here on, a refusal of the system (full disk, read-only
    folder, ...) ends a cell of the notebook with one sentence too."""
    explain_os_errors_in_ipython()
    check_injected_parameters()
    profile = get_profile(quick)
    check_number("seed", seed, 0, 2**31 - 1, integer=True)
    if not isinstance(device, str):
        raise InputError(f"device is a string ('auto', 'cpu', 'cuda', 'cuda:N'); got {device!r}.")
    base = working_root()
    roots = Roots.create(data_root, run_root, weights_dir, base=base)
    for name, value in (("torch_compile", torch_compile), ("cuda_graphs", cuda_graphs)):
        if not isinstance(value, bool):
            raise InputError(f"{name} is True or False; got {value!r}.")
    check_choice("precision", precision, PRECISIONS)
    bf16 = None if precision == "auto" else precision == "bf16"
    session = Session(
        profile,
        seed,
        Precision.for_device(device, bf16=bf16, compile=torch_compile, cuda_graphs=cuda_graphs),
        roots,
        _progress(),
        base,
    )
    # A papermill job given a share of the machine's cores uses that share, not every core.
    threads = os.environ.get("DWLT_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    return session
