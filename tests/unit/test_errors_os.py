"""Refusals of the system and of the environment end in one sentence naming the file or folder and the cause:
from the package's own writes and reads, from the command line and from a notebook. Root ignores file modes,
so a refusal that a plain user would meet is raised by the call that would meet it, with the system's errno;
a full disk is /dev/full, a name too long a real one."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import torch

from dwlt_utils import cli, io, jobs, sweeps, tickets
from dwlt_utils.errors import DwltError, InputError
from dwlt_utils.profiles import QUICK

TOO_LONG = "x" * 300  # one path component over every common file system's 255 bytes
FULL_DISK = "the disk is full (ENOSPC); free space on it or give a folder on another disk, then run again."


def refusal(code: int, path: Path) -> OSError:
    """What the system raises for `code` on `path`."""
    return OSError(code, os.strerror(code), str(path))


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write lands on /dev/full, which answers each write with ENOSPC as a full disk does."""

    def on_full_disk(dir, prefix, suffix):
        return os.open("/dev/full", os.O_WRONLY), str(Path(dir) / f"{prefix}full{suffix}")

    monkeypatch.setattr(io.tempfile, "mkstemp", on_full_disk)


def test_a_full_disk_under_torch_save_is_named_not_unexpected_pos(tmp_path, full_disk):
    resume = tmp_path / "run" / "resume.pt"
    with pytest.raises(DwltError) as err:
        io.save_torch(resume, {"w": torch.zeros(100_000)})
    assert str(err.value) == f"Cannot write {resume}: {FULL_DISK}"
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC and not resume.exists()


def test_a_full_disk_under_an_executions_state_record_is_named(tmp_path, full_disk):
    execution = jobs.Execution(cli.NOTEBOOKS / "06_figures.ipynb", {}, {}, tmp_path / "executed" / "06_figures")
    with pytest.raises(DwltError) as err:
        jobs.submitting(execution, "local", 0)
    assert str(err.value) == f"Cannot write {execution.state_file}: {FULL_DISK}"


def test_a_read_only_run_root_names_the_file_and_the_cause(tmp_path, monkeypatch):
    def read_only(dir, prefix, suffix):
        raise refusal(errno.EROFS, Path(dir) / f"{prefix}abc{suffix}")

    monkeypatch.setattr(io.tempfile, "mkstemp", read_only)
    config = tmp_path / "runs" / "transfer" / "ab12" / "seed_1" / "config.json"
    with pytest.raises(
        DwltError, match=r"^Cannot write .*config\.json: its file system is mounted read-only \(EROFS\)"
    ):
        io.write_json(config, {"lr": 0.01})


def test_a_lock_in_a_run_directory_of_another_user_names_it_and_what_to_do(tmp_path, monkeypatch):
    def another_users(path, mode="r"):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(io, "open", another_users, raising=False)
    lock = tmp_path / "transfer" / "ab12" / "seed_1" / ".lock"
    with pytest.raises(DwltError) as err, io.exclusive(lock):
        pass
    assert str(err.value) == (
        f"Cannot create the lock {lock}: permission is denied (EACCES); it or a folder above it belongs to another "
        "user or has modes that leave you out: ask the owner for access, or give a folder of your own."
    )
    with pytest.raises(DwltError, match=r"^Cannot read the lock .*permission is denied"):
        io.lock_held(lock)


def test_a_name_too_long_for_the_file_system_is_named(tmp_path):
    sidecar = tmp_path / TOO_LONG / "backbone.pt.json"
    with pytest.raises(DwltError, match=r"a name in its path is longer than the file system allows.*ENAMETOOLONG"):
        io.write_json(sidecar, {})
    with pytest.raises(DwltError, match=rf"^Cannot read {tmp_path}/x+/mask\.pt: a name in its path is longer"):
        io.sha256_of(tmp_path / TOO_LONG / "mask.pt")


def one_line(capsys) -> str:
    """What a command said on stderr: exactly one line, no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["status", "{tmp}/absent.ipynb"], "MissingInputError: Cannot read the notebook {tmp}/absent.ipynb: it does "),
        (["sweep", "{tmp}"], "FileSystemError: Cannot read the notebook {tmp}: it is a folder, not a file (EISDIR)"),
        (["plan", "sweep", "{tmp}/notes.txt"], "FileFormatError: {tmp}/notes.txt is not a Jupyter notebook (Notebook"),
        (["status", "{tmp}/bare.ipynb"], "InputError: {tmp}/bare.ipynb has no cell tagged 'parameters', so a sweep"),
        (["render", "{tmp}/absent.ipynb"], "MissingInputError: Cannot read the notebook {tmp}/absent.ipynb"),
        (["check", "{tmp}/notes.txt"], "FileFormatError: {tmp}/notes.txt is not a Jupyter notebook"),
    ],
)
def test_a_command_given_no_notebook_says_so_in_one_sentence(tmp_path, capsys, command, said):
    (tmp_path / "notes.txt").write_text("not a notebook\n")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), tmp_path / "bare.ipynb")
    assert cli.main([part.format(tmp=tmp_path) for part in command]) == 2
    assert one_line(capsys).startswith(said.format(tmp=tmp_path))


def test_a_run_root_whose_name_is_too_long_is_one_sentence_from_the_command_line(tmp_path, capsys):
    run_root = tmp_path / TOO_LONG
    status = ["status", str(cli.NOTEBOOKS / "06_figures.ipynb"), "-p", "run_root", str(run_root)]
    assert cli.main(status) == 2
    assert one_line(capsys).startswith(f"FileSystemError: Cannot use {run_root}")


def test_html_into_a_folder_below_a_file_is_one_sentence(tmp_path, capsys):
    (tmp_path / "rendered").write_text("a file where a folder should be\n")
    out = tmp_path / "rendered" / "html"
    assert cli.main(["render", str(cli.NOTEBOOKS / "06_figures.ipynb"), "--out", str(out)]) == 2
    assert one_line(capsys).startswith(f"FileSystemError: Cannot use {out}: a part of its path is a file")


@pytest.mark.parametrize(
    "command",
    [
        ["sweep", str(cli.NOTEBOOKS / "06_figures.ipynb")],
        ["search", "--pretraining", "adv", "--dataset", "cifar10"],
    ],
)
def test_slurm_where_there_is_none_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, command):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no sbatch anywhere
    run_root = tmp_path / "runs"
    assert cli.main([*command, "-p", "quick", "True", "-p", "run_root", str(run_root), "--executor", "slurm"]) == 2
    assert one_line(capsys) == (
        "InputError: --executor slurm submits with Slurm's sbatch, which is not on PATH on this machine; run the "
        "command on a login node of the cluster, or use --executor local."
    )
    assert not run_root.exists()


def notebook_of(tmp_path: Path, *sources: str) -> Path:
    path = tmp_path / "cells.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_a_notebook_cell_refused_by_the_system_ends_in_the_sentence(tmp_path):
    """open() in a cell, not the package: after notebook.start every refusal of the system reads as one."""
    start = (
        "from dwlt_utils import notebook\nnotebook.start('06_figures', "
        f"dict(quick=True, seed=1, device='cpu', data_root='{tmp_path}', run_root='{tmp_path}'))"
    )
    notebook = notebook_of(tmp_path, start, f"open('{tmp_path}/{TOO_LONG}', 'w')")
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(notebook), str(tmp_path / "out.ipynb"), progress_bar=False, cwd=str(tmp_path))
    assert err.value.ename == "FileSystemError"
    assert err.value.evalue.startswith(f"Cannot use {tmp_path}/{TOO_LONG}: a name in its path is longer")
    assert "Traceback" not in "".join(err.value.traceback)


def test_a_killed_kernel_says_why_what_to_read_and_what_to_do(tmp_path):
    notebook = notebook_of(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    execution = jobs.Execution(notebook, {}, {}, tmp_path / "executed" / "cells")
    assert sweeps.run_local([execution], quiet=True) == {execution: False}
    said = jobs.read_state(execution)["error"]
    assert said.startswith("The kernel running cells.ipynb died, killed by the system, most often for want of memory")
    assert str(execution.output) in said and str(execution.folder / "logs") in said
    assert said.endswith(
        "run fewer jobs at once (--jobs) or give each more memory, then run it again: it resumes "
        "from its last finished epoch."
    )


@pytest.mark.parametrize(("nproc_per_node", "nnodes"), [(0, 1), (2, 0)])
def test_no_ladder_processes_are_refused_in_the_parameters_given(nproc_per_node, nnodes):
    with pytest.raises(InputError) as err:
        tickets.ImpConfig.create(profile=QUICK, pretraining="adv", processes=nproc_per_node * nnodes)
    assert str(err.value).startswith("nproc_per_node × nnodes (notebook 02; imp_processes in 03-05) must be an integer")
