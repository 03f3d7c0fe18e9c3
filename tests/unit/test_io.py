import os
import stat

import pytest
import torch

from dwlt_utils import io
from dwlt_utils.errors import FileFormatError, MissingInputError, UntrustedFileError


class RunsCode:
    """A pickle that would run a shell command when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_torch_reasons_are_cut_to_one_line():
    weights_only = RuntimeError(
        "Weights only load failed. Long advice.\n\t(1) more\nWeightsUnpickler error: \n\nUnsupported operand 7\n\nDocs."
    )
    assert io.torch_reason(weights_only) == "Unsupported operand 7"
    assert io.torch_reason(RuntimeError("unexpected EOF,\n expected 4 more bytes. The file might be corrupted.")) == (
        "unexpected EOF, expected 4 more bytes"
    )
    assert io.torch_reason(EOFError()) == "EOFError"


def damaged_files(tmp_path):
    good = io.save_torch(tmp_path / "good.pt", {"w": torch.ones(3)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files = {
        "empty (0 bytes)": b"",
        "HTML page": b"<!DOCTYPE html><html><body>Sign in</body></html>",
        "not a PyTorch checkpoint": os.urandom(256).replace(b"\x80", b"\x81").replace(b"PK", b"QK"),
    }
    out = {}
    for what, content in files.items():
        path = tmp_path / f"{len(out)}.pt"
        path.write_bytes(b"\x00" + content if what.startswith("not") else content)
        out[what] = path
    out["probably truncated or corrupt"] = truncated
    return out


def test_a_damaged_file_is_one_sentence_that_names_it_and_what_to_do(tmp_path):
    for what, path in damaged_files(tmp_path).items():
        with pytest.raises(FileFormatError) as err:
            io.load_torch(path, remedy="delete it and re-run notebooks/02_imp.ipynb")
        text = str(err.value)
        assert text.startswith(str(path)) and what in text, text
        assert text.endswith("; delete it and re-run notebooks/02_imp.ipynb.") and "\n" not in text
        assert "weights_only" not in text and (err.value.__context__ is None or err.value.__suppress_context__)
    with pytest.raises(MissingInputError, match="does not exist"):
        io.load_torch(tmp_path / "absent.pt")


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"w": RunsCode(marker)}, tmp_path / "mask.pt")
    with pytest.raises(UntrustedFileError) as err:
        io.load_torch(tmp_path / "mask.pt")
    assert "system" in str(err.value) and "was not read" in str(err.value) and io.RERUN in str(err.value)
    assert "weights_only" not in str(err.value) and not marker.exists()


def test_a_damaged_json_file_is_named(tmp_path):
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(FileFormatError, match=r"meta.json is not a readable JSON file .*; delete it"):
        io.read_json(tmp_path / "meta.json")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        written = [io.write_text(tmp_path / "a.txt", "x"), io.save_torch(tmp_path / "b.pt", {"w": torch.ones(1)})]
    finally:
        os.umask(old)
    assert [stat.S_IMODE(p.stat().st_mode) for p in written] == [0o666 & ~umask] * 2
