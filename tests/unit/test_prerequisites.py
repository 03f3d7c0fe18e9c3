"""`make install`'s prerequisites: apt-get where it can be used, else Fashion-MNIST downloaded with torchvision's
checksums (here from a server on 127.0.0.1, never the internet), else one sentence."""

import functools
import gzip
import hashlib
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dwlt_utils import data, prerequisites
from dwlt_utils.errors import MissingInputError

from genuine_files import fashion_files

FILES = {"train-labels-idx1-ubyte.gz": b"labels " * 100, "t10k-labels-idx1-ubyte.gz": b"test labels " * 50}


def md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


RESOURCES = [(name, md5(blob)) for name, blob in FILES.items()]


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def mirror(tmp_path):
    """A local HTTP server holding FILES; its URL ends in '/', as torchvision's mirrors do."""
    served = tmp_path / "served"
    served.mkdir()
    for name, blob in FILES.items():
        (served / name).write_bytes(blob)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def dead_mirror():
    """A URL on 127.0.0.1 where nothing listens: a machine without network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_files_are_downloaded_and_checked(tmp_path, mirror):
    folder = tmp_path / "fashion-mnist"
    prerequisites.download_fashion_mnist(folder, [mirror], RESOURCES)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FILES  # and no temporary file left


def test_a_checksum_mismatch_is_one_sentence_and_keeps_nothing(tmp_path, mirror):
    folder = tmp_path / "fashion-mnist"
    wrong = [(name, "0" * 32) for name, _ in RESOURCES]
    with pytest.raises(MissingInputError) as err:
        prerequisites.download_fashion_mnist(folder, [mirror], wrong)
    message = str(err.value)
    assert f"its MD5 is {RESOURCES[0][1]}, not torchvision's {'0' * 32}" in message
    assert "dataset-fashion-mnist" in message and str(folder) in message and "\n" not in message
    assert not folder.exists() or list(folder.iterdir()) == []


def test_without_network_it_names_the_package_and_the_folder(tmp_path, dead_mirror):
    folder = tmp_path / "fashion-mnist"
    with pytest.raises(MissingInputError) as err:
        prerequisites.download_fashion_mnist(folder, [dead_mirror], RESOURCES)
    message = str(err.value)
    assert message.startswith("Fashion-MNIST could not be downloaded (http://127.0.0.1:")
    assert "sudo apt-get install dataset-fashion-mnist" in message and f"in {folder}." in message
    assert message.count(".gz") >= 4 + 1  # the four files to put there, and the one that failed
    assert "\n" not in message


def test_the_next_mirror_serves_what_the_first_does_not(tmp_path, mirror, dead_mirror):
    folder = tmp_path / "fashion-mnist"
    prerequisites.download_fashion_mnist(folder, [dead_mirror, mirror + "missing/", mirror], RESOURCES)
    assert {p.name for p in folder.iterdir()} == set(FILES)


def test_files_already_there_are_not_fetched_again(tmp_path, dead_mirror):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name, blob in FILES.items():
        (folder / name).write_bytes(blob)
    prerequisites.download_fashion_mnist(folder, [dead_mirror], RESOURCES)


# ---- what the data module reads


@pytest.fixture()
def copies(tmp_path, monkeypatch):
    """Debian's folder and the download folder, both empty."""
    folders = {"debian": tmp_path / "debian", "downloaded": tmp_path / "downloaded"}
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", folders["debian"])
    monkeypatch.setattr(data, "DOWNLOADED_FASHION_MNIST", folders["downloaded"])
    return folders


def write_gz(folder: Path) -> None:
    folder.mkdir()
    for name, blob in fashion_files(60, 12).items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(blob))


@pytest.mark.parametrize("where", ["debian", "downloaded"])
def test_either_copy_is_what_the_data_module_reads(tmp_path, copies, where):
    assert prerequisites.missing_packages()[0] == "dataset-fashion-mnist"
    assert "make install" in prerequisites.fashion_mnist_problem()
    write_gz(copies[where])
    assert prerequisites.fashion_mnist_present() and prerequisites.fashion_mnist_problem() is None
    data.ensure_available("fashion_mnist", tmp_path / "root")
    splits = data._load_splits(data.DATASETS["fashion_mnist"], tmp_path / "root", False, 55, 5)
    assert len(splits.test) == 12


# ---- the install step


@pytest.fixture()
def machine(monkeypatch):
    """A machine whose state each test sets: what is installed, whether apt-get can be used, and what runs."""
    state = {"fashion": False, "browser": None, "apt": [], "download": None, "commands": []}
    monkeypatch.setattr(prerequisites, "fashion_mnist_present", lambda: state["fashion"])
    monkeypatch.setattr(prerequisites, "browser", lambda: state["browser"])
    monkeypatch.setattr(prerequisites, "apt_prefix", lambda: state["apt"])

    def run(command, **kwargs):
        state["commands"].append(command)
        if command[-1] == "dataset-fashion-mnist":
            state["fashion"] = True
        return type("Done", (), {"returncode": 0})()

    def download():
        if state["download"]:
            raise state["download"]
        state["fashion"] = True

    monkeypatch.setattr(prerequisites.subprocess, "run", run)
    monkeypatch.setattr(prerequisites, "download_fashion_mnist", download)
    return state


def test_nothing_runs_when_everything_is_there(machine):
    machine.update(fashion=True, browser="/usr/bin/chromium")
    assert prerequisites.main() == 0 and machine["commands"] == []


def test_apt_installs_what_is_missing_after_one_update(machine):
    assert prerequisites.main() == 0
    apt = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-qq"]
    assert machine["commands"] == [
        [*apt, "update"],
        [*apt, "install", "-y", "dataset-fashion-mnist"],
        [*apt, "install", "-y", "chromium"],
    ]


def test_without_apt_the_data_is_downloaded_and_the_browser_named(machine, capsys):
    machine.update(apt=None)
    assert prerequisites.main() == 0 and machine["commands"] == [] and machine["fashion"]
    assert "sudo apt-get install chromium" in capsys.readouterr().err


def test_a_failed_download_ends_in_its_sentence(machine, capsys):
    sentence = "Fashion-MNIST could not be downloaded (offline): install Debian's package dataset-fashion-mnist."
    machine.update(apt=None, browser="/usr/bin/chromium", download=MissingInputError(sentence))
    assert prerequisites.main() == 1
    assert capsys.readouterr().err == sentence + "\n"


def test_apt_is_used_as_root_or_through_passwordless_sudo_only(monkeypatch):
    which = {"apt-get": "/usr/bin/apt-get", "sudo": "/usr/bin/sudo"}
    monkeypatch.setattr(prerequisites.shutil, "which", which.get)
    monkeypatch.setattr(prerequisites.os, "geteuid", lambda: 0)
    assert prerequisites.apt_prefix() == []
    monkeypatch.setattr(prerequisites.os, "geteuid", lambda: 1000)
    sudo_answers = []
    monkeypatch.setattr(
        prerequisites.subprocess, "run", lambda *a, **k: type("Done", (), {"returncode": sudo_answers.pop()})()
    )
    sudo_answers.append(0)
    assert prerequisites.apt_prefix() == ["sudo", "-n"]
    sudo_answers.append(1)  # sudo would ask for a password
    assert prerequisites.apt_prefix() is None
    del which["apt-get"]  # not Debian
    assert prerequisites.apt_prefix() is None
