"""Errors that reach the user as one clear sentence.

Inside IPython (JupyterLab, papermill) an exception with `_render_traceback_` is shown through that method
instead of a traceback, so a bad parameter or a missing file ends a notebook with its sentence alone.
"""


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
