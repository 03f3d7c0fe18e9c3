"""Atomic writes and checked reads.

A killed run leaves either the old file or the new one, never half of one, and files are written with the
permissions the user's umask gives. Every file read back is checked: one that is empty, a saved web page,
truncated, or a pickle that would run code raises one sentence naming the file and what to do about it, and
so does a file the system will not let it write or read (a full disk, a read-only file system, another user's
folder, a name too long: `errors.os_error`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlparse

from .errors import FileFormatError, MissingInputError, UntrustedFileError, naming_os_errors

if TYPE_CHECKING:
    import torch

# What to do with a damaged file of a run root, unless a caller knows better.
RERUN = "delete it and re-run the notebook that wrote it"


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (setting it is process-wide)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^Umask:\s*([0-7]+)", status, re.M).group(1), 8)
    except (OSError, AttributeError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def follow_umask(path: Path) -> None:
    """Give a file the permissions a plain `open` would have given it."""
    os.chmod(path, 0o666 & ~_umask())


def atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    with naming_os_errors(path, "write"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, mode) as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            follow_umask(tmp)  # mkstemp makes files private; the user's umask decides instead
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), "w")


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, *, remedy: str = RERUN) -> Any:
    try:
        with naming_os_errors(path, "read"):
            text = Path(path).read_text()
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FileFormatError(f"{path} is not a readable JSON file ({err}); {remedy}.") from None


def save_torch(path: Path, obj: Any) -> Path:
    """torch.save through a temporary file; the object must hold tensors and plain containers only."""
    import torch  # here, not at the top: sweep jobs write their state through this module without torch

    def write(f: Any) -> None:
        kept = KeepingWriteErrors(f)
        try:
            torch.save(obj, kept)
        except RuntimeError:
            if kept.error is None:
                raise
            raise kept.error from None  # the system's reason, which torch words as "unexpected pos ..."

    return atomic_write(path, write, "wb")


class KeepingWriteErrors:
    """A file that keeps the error of a failed write: torch.save replaces it by its own message, which names
    neither the file nor the cause (a full disk reads "unexpected pos 704 vs 598")."""

    def __init__(self, file: Any):
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.file.flush()


def read_weights_only(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load restricted to tensors and plain containers: no code from the file ever runs. Raises torch's
    own errors; `load_torch` turns them into one sentence."""
    import torch

    with warnings.catch_warnings():
        # Bytes that only look like a legacy pickle make torch warn about its protocol before it fails.
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(path, map_location=map_location, weights_only=True)


def load_torch(path: Path, map_location: str | torch.device = "cpu", *, remedy: str = RERUN) -> Any:
    """A file of tensors and plain containers, read without running any code from it. A file that is not one
    raises one sentence that names it, says what is wrong and ends with `remedy`."""
    path = Path(path)
    fmt = torch_format(path, remedy)
    try:
        return read_weights_only(path, map_location)
    except Exception as err:  # torch raises many types here; each becomes one sentence naming the file
        code = unsupported_global(err)
        if code:
            raise UntrustedFileError(
                f"{path} names the Python object {code}, which unpickling would run as code, so it was not read; "
                f"{remedy}."
            ) from None
        raise unreadable(path, fmt, err, remedy) from None


def unreadable(path: Path, fmt: str, err: BaseException, remedy: str) -> FileFormatError:
    """The error for a torch file of a known format that torch could not read."""
    return FileFormatError(
        f"{path} cannot be read as a PyTorch checkpoint ({fmt} format; torch: {torch_reason(err)}), so it is "
        f"probably truncated or corrupt; {remedy}."
    )


def torch_format(path: Path, remedy: str) -> str:
    """'zip' or 'legacy', read from the first bytes, which also reveal what else was saved under the name."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist or is not a file; {remedy}.")
    with opened(path, "rb", "read") as f:
        head = f.read(64)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        problem = "is empty (0 bytes)"
    elif text.startswith(b"<"):
        problem = "is an HTML page (a sign-in, consent or error page saved under its name), not a checkpoint"
    elif text.startswith(b"version https://git-lfs"):
        problem = "is a Git LFS pointer, not the checkpoint it points to"
    elif head.startswith(b"PK\x03\x04"):
        return "zip"
    elif head.startswith(b"\x80"):  # a pickle protocol marker: torch's legacy (pre-1.6) format
        return "legacy"
    else:
        problem = f"is not a PyTorch checkpoint (it starts with {head[:8]!r}, in neither torch format)"
    raise FileFormatError(f"{path} {problem}; {remedy}.")


def unsupported_global(err: BaseException) -> str | None:
    """The Python object a weights-only load refused to build, when that is why it failed."""
    # torch words it "Unsupported global: GLOBAL x" or, for blocked modules, "unsupported GLOBAL x whose ..."
    found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", str(err))
    return found.group(1) if found else None


def torch_reason(err: BaseException) -> str:
    """torch's own explanation, cut to its first sentence on one line (torch's run to many paragraphs)."""
    text = str(err).split("WeightsUnpickler error:", 1)[-1]
    paragraph = next((p for p in re.split(r"\n\s*\n", text) if p.strip()), "")
    first = re.split(r"(?<=[.!?])\s", " ".join(paragraph.split()), maxsplit=1)[0].rstrip(".")
    return first[:160] or type(err).__name__


def opened(path: Path, mode: str, doing: str) -> IO[Any]:
    """`open`, with the system's refusal (no such file, no permission, ...) as one sentence naming `path`."""
    with naming_os_errors(path, doing):
        return open(path, mode)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with opened(path, "rb", "read") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def unreachable(url: str, timeout: float = 10.0) -> str | None:
    """Why `url`'s host cannot be reached within `timeout` seconds, or None when it answers.

    torchvision's and torch.hub's downloads have no timeout: without a network they would hang rather
    than fail, so every download first asks this."""
    parts = urlparse(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return f"{host} did not answer ({err})"
    return None


def lock_held(lock_path: Path) -> bool:
    """Whether another process holds the advisory lock of `exclusive` on `lock_path` right now."""
    try:
        handle = opened(lock_path, "r", "read the lock")
    except FileNotFoundError:  # no lock file: no run ever held it
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an advisory lock on `lock_path` (created if absent): other processes asking for it wait."""
    lock_path = Path(lock_path)
    with naming_os_errors(lock_path, "create the lock"):
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    with opened(lock_path, "a", "create the lock") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
