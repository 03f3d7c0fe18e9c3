"""What every notebook does first: read its parameters, validate the shared ones, resolve where and how the
work runs once, and say so in a banner. `start` returns the `Session` and the notebook's `Parameters`, which
the step modules turn into runs (`transfer.plan`, `tickets.plan`); sweeps, searches and plans build the same
`Parameters` from a dict and call the same functions, so a notebook parameter has one way into a run."""

from __future__ import annotations

import ast
import copy
import functools
import json
import os
import platform
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import torch

from . import __version__
from .engine import Precision
from .errors import InputError, check_choice, check_number, explain_os_errors_in_ipython
from .paths import Roots, resolve_folder, slug
from .profiles import Profile, get_profile
from .results import git_revision
from .vocabulary import PRECISIONS

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
DEFAULT_RUN_ROOT = "runs"  # every notebook's run_root default
FOLDERS = ("data_root", "run_root", "weights_dir")  # where a notebook's files are, not what it computes


def notebook_path(name: str) -> Path:
    """The notebook of the checkout, by its name without `.ipynb` ("04_adv_transfer")."""
    return NOTEBOOKS / f"{name}.ipynb"


def declared_parameters(path: Path) -> dict[str, Any]:
    """The parameters of a notebook with their default values, read from its parameters cell."""
    return copy.deepcopy(_declared(Path(path).resolve()))


@functools.cache
def _declared(path: Path) -> dict[str, Any]:
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {
        node.target.id: ast.literal_eval(node.value)
        for node in ast.parse(cell.source).body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }


def makes(path: Path) -> str | None:
    """What a notebook makes from its parameters, as its metadata names it ("transfer runs", "an IMP
    ladder"; None: nothing a sweep can see on disk), so that code which runs notebooks never asks its name."""
    return nbformat.read(path, as_version=4).metadata.get("dwlt", {}).get("makes")


@dataclass(frozen=True)
class Parameters(Mapping):
    """Every parameter of one notebook, its defaults filled in: what a run is made from, and what names the
    papermill command that makes it again."""

    notebook: str  # its name without `.ipynb`
    values: dict = field(hash=False)

    @classmethod
    def of(cls, notebook: str, given: Mapping[str, Any]) -> Parameters:
        """The notebook's parameters with `given` set; a name the notebook does not take is refused."""
        defaults = declared_parameters(notebook_path(notebook))
        unknown = [name for name in given if name not in defaults]
        if unknown:
            raise InputError(f"{notebook}.ipynb has no parameter {', '.join(unknown)}; it takes {', '.join(defaults)}.")
        return cls(notebook, {**defaults, **given})

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def but(self, **changes: Any) -> Parameters:
        """These parameters with some changed."""
        return Parameters.of(self.notebook, {**self.values, **changes})

    def changed(self) -> dict[str, Any]:
        """The parameters that differ from the notebook's defaults, in its order."""
        defaults = declared_parameters(notebook_path(self.notebook))
        return {k: v for k, v in self.values.items() if v != defaults[k]}

    def at(self, roots: Roots) -> Parameters:
        """These parameters with the folders of `roots` (those the defaults resolve to left as they are)."""
        defaults = Roots.create("data", DEFAULT_RUN_ROOT, "weights", base=working_root())
        names = [name for name in ("data_root", "run_root") if getattr(roots, name) != getattr(defaults, name)]
        folders = {name: str(getattr(roots, name)) for name in names}
        return self.but(**folders)

    def output(self) -> Path:
        """Where the command writes the executed notebook: where a sweep puts it, named after the parameters
        that differ from the defaults (its folders left out)."""
        named = {k: v for k, v in self.changed().items() if k not in FOLDERS}
        return Path(self["run_root"]) / "executed" / self.notebook / f"{slug(named)}.ipynb"

    def command(self) -> str:
        """The papermill command, run from the checkout's root, that runs the notebook with these parameters
        (those at their defaults left out); its output folder must exist (`shell_line` makes it)."""
        flags = [_flag(name, value) for name, value in self.changed().items()]
        return " ".join(["papermill", f"notebooks/{self.notebook}.ipynb", shlex.quote(str(self.output())), *flags])


def shell_line(runs: list[Parameters]) -> str:
    """One line for a shell that runs these notebooks one after the other, from the checkout's root: their
    output folders made first (papermill refuses a missing one), then each papermill command."""
    folders = dict.fromkeys(shlex.quote(str(p.output().parent)) for p in runs)
    return " && ".join([f"mkdir -p {' '.join(folders)}", *(p.command() for p in runs)])


def _flag(name: str, value: Any) -> str:
    """One parameter as papermill's command line reads it back to the same value: -p types what it reads
    (True, 1, 0.5), -r keeps a string that would read as another type, and a list goes as YAML (-y)."""
    if isinstance(value, (bool, int, float)):
        return f"-p {name} {value!r}"
    if isinstance(value, str):
        raw = value in ("True", "False", "None") or _number(value)
        return f"{'-r' if raw else '-p'} {name} {shlex.quote(value)}"
    return f"-y {shlex.quote(f'{name}: {json.dumps(value)}')}"


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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


def open_session(parameters: Mapping[str, Any], *, device: str | None = None) -> Session:
    """The session of a notebook's parameters (on `device` instead of its own when given: a sweep finds on a
    CPU what its cells make); raises one clear sentence on a bad shared parameter."""
    profile = get_profile(parameters["quick"])
    seed = parameters["seed"]
    check_number("seed", seed, 0, 2**31 - 1, integer=True)
    device = parameters["device"] if device is None else device
    if not isinstance(device, str):
        raise InputError(f"device is a string ('auto', 'cpu', 'cuda', 'cuda:N'); got {device!r}.")
    base = working_root()
    folders = (parameters["data_root"], parameters["run_root"], parameters.get("weights_dir", "weights"))
    roots = Roots.create(*folders, base=base)
    fast = {name: parameters.get(name, False) for name in ("torch_compile", "cuda_graphs")}
    for name, value in fast.items():
        if not isinstance(value, bool):
            raise InputError(f"{name} is True or False; got {value!r}.")
    precision = parameters.get("precision", "auto")
    check_choice("precision", precision, PRECISIONS)
    bf16 = None if precision == "auto" else precision == "bf16"
    engine = Precision.for_device(device, bf16=bf16, compile=fast["torch_compile"], cuda_graphs=fast["cuda_graphs"])
    return Session(profile, seed, engine, roots, _progress(), base)


def start(notebook: str, namespace: Mapping[str, Any]) -> tuple[Session, Parameters]:
    """What a notebook's first cell calls with its name and `globals()`: its parameters read from the
    namespace its parameters cell filled, validated, and its session. Raises one clear sentence on bad input,
    parameters the notebook does not have included. From here on, a refusal of the system (full disk,
    read-only folder, ...) ends a cell of the notebook with one sentence too."""
    explain_os_errors_in_ipython()
    check_injected_parameters()
    declared = declared_parameters(notebook_path(notebook))
    parameters = Parameters(notebook, {name: namespace.get(name, default) for name, default in declared.items()})
    session = open_session(parameters)
    # A papermill job given a share of the machine's cores uses that share, not every core.
    threads = os.environ.get("DWLT_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    return session, parameters
