"""Errors that reach the user as one clear sentence, and the checks of parameters that raise them.

Inside IPython (JupyterLab, papermill) an exception with `_render_traceback_` is shown through that method
instead of a traceback, so a bad parameter or a missing file ends a notebook with its sentence alone. A refusal
of the system (a full disk, a read-only file system, no permission, a name too long) is one sentence too
(`os_error`): where the package writes and reads, at the command line's top level, and in every cell of a
notebook after `notebook.start`.
"""

import errno
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class DwltError(Exception):
    """A problem the user can fix; its message says what was wrong and what is accepted."""

    def __str__(self) -> str:
        # The sentence alone: an OSError subclass keeping `errno` would print "[Errno N] ..." instead.
        return str(self.args[0]) if self.args else ""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class InputError(DwltError, ValueError):
    """A parameter outside what the protocol or the code accepts."""


class MissingInputError(DwltError, FileNotFoundError):
    """A data set, weight file or ticket that is not where it should be."""


class FileFormatError(DwltError):
    """A file that exists but is not what it claims to be (HTML page, truncated file, unknown layout)."""


class UntrustedFileError(DwltError):
    """A pickle that would run arbitrary code and whose hash is not known to be safe."""


class FileSystemError(DwltError, OSError):
    """A file or folder the system would not let the package use: a full disk, a read-only file system, another
    user's folder, a name too long. Still an OSError, with the system's `errno`."""


# What the system's refusal means, and what the user can do about it, for the refusals a user can cause.
_NO_ACCESS = (
    "permission is denied",
    "it or a folder above it belongs to another user or has modes that leave you out: ask the owner for access, "
    "or give a folder of your own",
)
OS_CAUSES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the disk is full", "free space on it or give a folder on another disk, then run again"),
    errno.EDQUOT: ("your disk quota is used up", "free space within it or give a folder elsewhere, then run again"),
    errno.EROFS: ("its file system is mounted read-only", "give a folder on a writable file system"),
    errno.EACCES: _NO_ACCESS,
    errno.EPERM: _NO_ACCESS,
    errno.ENAMETOOLONG: (
        "a name in its path is longer than the file system allows, usually 255 bytes",
        "give shorter folder names or parameter values",
    ),
    errno.ENOENT: ("it does not exist", "check the path"),
    errno.ENOTDIR: (
        "a part of its path is a file, not a folder",
        "give a path whose every part but the last is a folder",
    ),
    errno.EISDIR: ("it is a folder, not a file", "give a file"),
    errno.EIO: ("the disk reported an input/output error", "check the disk and run again"),
}


def os_error(err: OSError, path: str | Path | None = None, doing: str = "use") -> DwltError:
    """The system's refusal as one sentence: what could not be done to which file, why, and what to do; a
    MissingInputError for a file that does not exist, else a FileSystemError. `path` names the file the user
    knows (not a temporary file or a parent folder of it) when given."""
    path = path if path is not None else err.filename
    code = err.errno or 0
    cause, remedy = OS_CAUSES.get(code, ((err.strerror or str(err)).lower(), "check the path and run again"))
    name = errno.errorcode.get(code, type(err).__name__)
    what = f"{doing} {path}" if path is not None else "do what was asked"
    kind = MissingInputError if code == errno.ENOENT else FileSystemError
    translated = kind(f"Cannot {what}: {cause} ({name}); {remedy}.")
    # errno kept for callers that test it; not the file name, with which OSError would pickle itself without the
    # sentence
    translated.errno, translated.strerror = err.errno, err.strerror
    return translated


@contextmanager
def naming_os_errors(path: str | Path, doing: str) -> Iterator[None]:
    """Raise the system's refusals inside as one sentence naming `path` (`os_error`)."""
    try:
        yield
    except DwltError:
        raise
    except OSError as err:
        raise os_error(err, path, doing) from None


def said(err: BaseException) -> str:
    """An error as the one line a user reads: a DwltError's sentence, a refusal of the system in words
    (`os_error`), anything else as Python writes it."""
    if isinstance(err, OSError) and not isinstance(err, DwltError):
        err = os_error(err)
    if isinstance(err, DwltError):
        return f"{type(err).__name__}: {err}"
    return sentence(repr(err))


def explain_os_errors_in_ipython() -> None:
    """In a notebook, show a refusal of the system raised by code outside the package (a data set downloaded
    into a read-only folder, ...) as the sentence of `os_error`, as the package's own errors show."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.set_custom_exc((OSError,), _show_os_error)


def _show_os_error(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
    """IPython's handler of the exceptions given to `set_custom_exc`: it shows them itself."""
    shown = value if isinstance(value, DwltError) else os_error(value)
    shell.showtraceback((type(shown), shown, tb), tb_offset=tb_offset)  # the error output papermill reports
    return shown._render_traceback_()


def sentence(phrase: str) -> str:
    """A phrase made into a sentence of its own: capitalised, with a full stop."""
    return phrase[0].upper() + phrase[1:] + "."


def phrase(err: BaseException) -> str:
    """An error's sentence as a phrase, to join with others into one sentence: no full stop, and a first word
    that is not a name ("The", not "IMP" or "ImageNet") in lower case."""
    said = str(err).removesuffix(".")
    return said[:1].lower() + said[1:] if said[1:2].islower() else said


def _show(bound: float) -> str:
    return f"{bound:,}" if isinstance(bound, int) else f"{bound:g}"


def check_number(
    name: str, value: Any, low: float, high: float, *, integer: bool = False, low_open: bool = False
) -> None:
    """Raise InputError unless `value` is a number (an integer when asked) in [low, high], or (low, high]."""
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        what = "an integer" if integer else "a number"
        raise InputError(
            f"{name} must be {what} in {'(' if low_open else '['}{_show(low)}, {_show(high)}]; got {value!r}."
        )


def check_choice(name: str, value: Any, accepted: Collection[str]) -> None:
    """Raise InputError unless `value` is one of `accepted` (a tuple, or a vocabulary of names and meanings)."""
    if value not in accepted:
        raise InputError(f"Unknown {name} {value!r}; accepted: {', '.join(map(str, accepted))}.")
