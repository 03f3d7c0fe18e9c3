"""The interactive path, rehearsed in a real browser: JupyterLab serves notebook 04, headless Chromium
(Debian's `chromium`, driven by Playwright; no browser is downloaded) edits its parameters cell as a user
does, runs all cells, and the page must show the progress widget, the records table and the figures, with
no error output."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from executed import NOTEBOOKS, execute

pytestmark = pytest.mark.rehearsal

NOTEBOOK = "04_adv_transfer"
TOKEN = "dwlt-rehearsal"
RUN_SECONDS = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run_root(tmp_path_factory, fashion_mnist) -> Path:
    """A quick-profile run root holding the standard source (the cheapest to pre-train): the cell in the
    browser transfers its one-shot magnitude ticket, which needs no IMP ladder."""
    base = tmp_path_factory.mktemp("lab-inputs")
    runs = base / "runs"
    execute("01_load_pretrained", base, quick=True, run_root=str(runs), pretrainings=["standard"])
    return runs


@pytest.fixture(scope="module")
def lab(tmp_path_factory, jupyterlab):
    """JupyterLab on localhost, serving a folder that holds a copy of the notebook."""
    root = tmp_path_factory.mktemp("lab")
    (root / "notebooks").mkdir()
    shutil.copy(NOTEBOOKS / f"{NOTEBOOK}.ipynb", root / "notebooks")
    jupyter_home = root / ".jupyter-home"  # no settings of this machine's user leak in
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(jupyter_home / "config"),
        JUPYTER_DATA_DIR=str(jupyter_home / "data"),
        JUPYTER_RUNTIME_DIR=str(jupyter_home / "runtime"),
        IPYTHONDIR=str(jupyter_home / "ipython"),
    )
    port = free_port()
    log = open(root / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={root}",
            *(["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None, (root / "jupyterlab.log").read_text()
            time.sleep(0.5)
    yield {"root": root, "url": url}
    server.terminate()
    server.wait(30)
    log.close()


def test_notebook_04_runs_in_jupyterlab_and_shows_its_progress_table_and_figures(
    lab, run_root, sync_playwright, chromium
):
    edits = (
        "\nquick = True"
        f'\nrun_root = "{run_root}"'
        '\npretraining = "standard"'
        '\nticket = "omp"'
        "\nsparsity = 0.36"
        "\nepochs = 2"
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{lab['url']}/lab/tree/notebooks/{NOTEBOOK}.ipynb?token={TOKEN}")
        parameters = page.locator(".jp-CodeCell").filter(has_text="quick: bool = False")
        parameters.locator(".cm-content").click()
        page.keyboard.press("Control+End")
        page.keyboard.insert_text(edits)  # the user's values, below the defaults, as one edits a cell
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

        prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline:
            texts = prompts.all_inner_texts()
            if texts and all(t.strip() not in ("[ ]:", "[*]:", "") for t in texts):
                break
            time.sleep(2)
        else:
            pytest.fail(f"the notebook did not finish within {RUN_SECONDS} s; prompts: {prompts.all_inner_texts()}")

        outputs = page.locator(".jp-OutputArea-output")
        assert outputs.locator(".widget-hprogress").count() >= 1  # the live training bar (ipywidgets)
        assert outputs.locator("table.dataframe").count() >= 1  # the records table
        assert outputs.locator("img").count() >= 2  # training curves and the cell's curve
        assert outputs.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
        page.keyboard.press("Control+s")
        page.wait_for_timeout(2000)
        browser.close()

    saved = nbformat.read(lab["root"] / "notebooks" / f"{NOTEBOOK}.ipynb", as_version=4)
    cells = [c for c in saved.cells if c.cell_type == "code"]
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert errors == [], errors
    assert all(c.execution_count for c in cells)
    assert "quick = True" in cells[0].source
    records = list((run_root / "transfer").rglob("records.csv"))
    assert len(records) == 2  # the ticket and its dense baseline
