"""Errors that reach the user as one clear sentence, and the checks of parameters that raise them.

Inside IPython (JupyterLab, papermill) an exception with `_render_traceback_` is shown through that method
instead of a traceback, so a bad parameter or a missing file ends a notebook with its sentence alone.
"""

from collections.abc import Collection
from typing import Any


class DwltError(Exception):
    """A problem the user can fix; its message says what was wrong and what is accepted."""

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


def sentence(phrase: str) -> str:
    """A phrase made into a sentence of its own: capitalised, with a full stop."""
    return phrase[0].upper() + phrase[1:] + "."


def phrase(err: BaseException) -> str:
    """An error's sentence as a phrase, to join with others into one sentence."""
    return str(err).removesuffix(".")


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
