from pathlib import Path

import pytest

from dwlt_utils import notebook
from dwlt_utils.errors import InputError

REPO = Path(notebook.__file__).resolve().parent.parent


def start(**overrides):
    given = {**dict(quick=True, seed=1, device="cpu", data_root="data", run_root="runs"), **overrides}
    return notebook.start("03_std_transfer", given)[0]


def test_relative_folders_mean_the_same_from_jupyterlab_and_from_papermill(monkeypatch, tmp_path):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.chdir(REPO / "notebooks")  # where JupyterLab starts a notebook's kernel
    from_lab = start().roots
    assert from_lab.run_root == REPO / "runs" and from_lab.data_root == REPO / "data"
    monkeypatch.chdir(tmp_path)  # anywhere else: the current directory
    elsewhere = start(run_root="/abs/runs").roots
    assert elsewhere.data_root == tmp_path / "data" and elsewhere.run_root == Path("/abs/runs")
    with pytest.raises(InputError, match="seed"):
        start(seed=-1)


def test_a_notebook_opened_in_another_clone_finds_that_clone(monkeypatch, tmp_path):
    """The kernel JupyterLab starts names its notebook; the checkout holding it is the root, whichever
    copy of the package is installed."""
    clone = tmp_path / "clone"
    (clone / "dwlt_utils").mkdir(parents=True)
    (clone / "dwlt_utils" / "__init__.py").write_text("")
    (clone / "notebooks").mkdir()
    monkeypatch.chdir(clone / "notebooks")
    monkeypatch.setenv("JPY_SESSION_NAME", str(clone / "notebooks" / "04_adv_transfer.ipynb"))
    session = start()
    assert session.roots.run_root == clone / "runs" and session.roots.data_root == clone / "data"
    assert session.progress == "bar"  # a person is watching: the live bar
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "scratch" / "mine.ipynb"))
    assert start().roots.run_root == clone / "notebooks" / "runs"  # not a checkout's notebooks/: as given


def test_a_session_resolves_device_and_precision_once(monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    session = start()
    assert session.device.type == "cpu" and session.precision.describe() == "cpu, fp32"
    assert session.progress == "phases"  # headless: a line per finished run
    assert "QUICK PROFILE" in session.banner() and "cpu, fp32" in session.banner()
    with pytest.raises(InputError, match="torch.compile and CUDA graphs are for CUDA devices"):
        start(torch_compile=True)


def test_a_folder_parameter_that_is_a_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(InputError, match=r"^run_root .*runs is a file, not a folder; give a folder"):
        start(run_root=str(tmp_path / "runs"))


def test_every_relative_folder_of_a_notebook_starts_at_the_same_place(monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.chdir(REPO / "notebooks")
    session = start()
    assert session.folder("results_dir", "results") == REPO / "results" == session.roots.run_root.parent / "results"
    assert session.folder("imagenet_root", "", optional=True) is None
    with pytest.raises(InputError, match="results_dir is a folder path"):
        session.folder("results_dir", "")


def test_a_notebook_starts_with_its_parameters_and_a_papermill_command_gives_them_back(monkeypatch):
    """`start` reads every declared parameter from the notebook's namespace; `command` writes the ones that
    differ from the defaults as papermill's command line reads them back (a number-like string stays one)."""
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    namespace = dict(quick=True, seed=2, device="cpu", dataset="svhn", regimes=["adv", "std"], subset="1", x=0)
    session, parameters = notebook.start("05_data_limited", namespace)
    assert session.seed == 2 and parameters.notebook == "05_data_limited" and "x" not in parameters
    assert parameters["ticket"] == "imp" and parameters["regimes"] == ["adv", "std"]
    assert parameters.changed() == {
        "quick": True,
        "seed": 2,
        "device": "cpu",
        "dataset": "svhn",
        "regimes": ["adv", "std"],
        "subset": "1",
    }
    command = parameters.command()
    assert command.startswith(
        "papermill notebooks/05_data_limited.ipynb runs/executed/05_data_limited/quick-True_seed-2"
    )
    assert command.endswith(
        '-p quick True -p seed 2 -p device cpu -p dataset svhn -y \'regimes: ["adv", "std"]\' -r subset 1'
    )
    with pytest.raises(InputError, match=r"^05_data_limited.ipynb has no parameter sparsty; it takes quick, seed"):
        parameters.but(sparsty=0.5)
