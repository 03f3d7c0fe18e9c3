"""Running the real notebooks with papermill, and reading what the executed notebooks hold."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill as pm

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, out_dir: Path, **parameters) -> nbformat.NotebookNode:
    """Run notebooks/<name>.ipynb with `parameters`, from `out_dir`, leaving the executed copy there."""
    out = out_dir / f"{name}.ipynb"
    pm.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(out),
        parameters=parameters,
        progress_bar=False,
        log_output=False,
        cwd=str(out_dir),
    )
    return nbformat.read(out, as_version=4)


def outputs(nb: nbformat.NotebookNode, kind: str) -> list:
    """The display outputs of the notebook holding data of MIME type `kind`."""
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind in o.get("data", {})]


def failed_cell(nb: nbformat.NotebookNode) -> tuple[str, dict]:
    """The source of the cell that raised, and its error output."""
    for c in nb.cells:
        for o in c.get("outputs", []):
            if o.output_type == "error":
                return c.source, o
    raise AssertionError("no error in the notebook")


def validation_cell(name: str) -> str:
    """The source of the first code cell after the parameters: where bad input must stop."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    params = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    return next(c.source for i, c in enumerate(nb.cells) if i > params and c.cell_type == "code")
