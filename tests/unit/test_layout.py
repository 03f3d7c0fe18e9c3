"""The house rules of the package, checked on its source: modules import only from the floors below, the
run-root layout is named in `paths` alone, and only `profiles` knows the quick profile by its name."""

import ast
import json
import sys
from pathlib import Path

import pytest

import dwlt_utils

PACKAGE = Path(dwlt_utils.__file__).parent
NOTEBOOKS = PACKAGE.parent / "notebooks"
# The floors of dwlt_utils/__init__.py; inside a floor, a module may import the ones listed before it.
FLOORS = [
    ("errors", "io", "vocabulary", "config", "paths"),
    (
        "models",
        "augment",
        "engine",
        "distributed",
        "attacks",
        "data",
        "corruptions",
        "nvimgcodec_jpeg",
        "batches",
        "visda",
        "evaluate",
        "pruning",
        "train",
        "imp",
        "checkpoints",
        "results",
    ),
    ("profiles", "plotting"),
    ("notebook",),
    ("sources", "tickets", "imp_worker", "autoattack", "transfer", "commands", "report"),
    ("jobs", "sweeps", "search", "bench", "gpu_check", "costs", "plans", "cli", "prerequisites"),
]
ORDER = [name for floor in FLOORS for name in floor]
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def imported_modules(name: str) -> set[str]:
    """The package modules that module `name` imports (relative or absolute)."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dwlt_utils."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("dwlt_utils.")}
    return found & set(MODULES)


def test_every_module_has_a_floor():
    assert sorted(ORDER) == MODULES


@pytest.mark.parametrize("name", MODULES)
def test_no_module_imports_one_above_it(name):
    above = {other for other in imported_modules(name) if ORDER.index(other) >= ORDER.index(name)}
    assert not above, f"{name} imports {sorted(above)}, which are not below it"


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    (tmp_path / "errors.py").write_text("from .transfer import TransferConfig\nfrom . import io, notebook\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    assert imported_modules("errors") == {"transfer", "io", "notebook"}


# Names of the run-root layout; written anywhere but paths.py they would be a second home for it.
LAYOUT_FILES = (
    "mask.pt",
    "sparsity.json",
    "records.csv",
    "metrics.csv",
    "resume.pt",
    "config.json",
    "ticket.pth.tar",
    "backbone.pt",
    "train_indices.json",
    ".lock",
    "best_sa.pt",
    "best_ra.pt",
)
LAYOUT_PREFIXES = ("level_", "seed_", "sparsity_")  # directory names, followed by a number


def layout_names_in(source: str) -> set[str]:
    """Layout names in the one-line string literals of `source` (an f-string's parts included); docstrings
    and comments may describe the layout."""
    strings = [
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "\n" not in node.value
    ]
    return {n for n in LAYOUT_FILES for s in strings if n in s} | {
        p for p in LAYOUT_PREFIXES for s in strings if s.endswith(p)
    }


def code_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        lines = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        return "\n".join(line for cell in lines for line in cell.splitlines() if not line.startswith("%"))
    return path.read_text()


def test_the_run_root_layout_is_named_in_paths_only():
    assert layout_names_in('f"{root}/seed_{seed}" + "records.csv"') == {"seed_", "records.csv"}
    for path in [*PACKAGE.glob("*.py"), *NOTEBOOKS.glob("*.ipynb")]:
        if path.name != "paths.py":
            named = layout_names_in(code_of(path))
            assert not named, f"{path.name} spells layout names {sorted(named)}; take them from dwlt_utils.paths"


def compares_with_quick(source: str) -> bool:
    return any(
        isinstance(node, ast.Compare)
        and any(isinstance(c, ast.Constant) and c.value == "quick" for c in [node.left, *node.comparators])
        for node in ast.walk(ast.parse(source))
    )


def test_only_profiles_knows_the_quick_profile_by_name():
    assert compares_with_quick('if profile.name == "quick": pass')
    offenders = [
        p.name
        for p in [*PACKAGE.glob("*.py"), *NOTEBOOKS.glob("*.ipynb")]
        if p.name != "profiles.py" and compares_with_quick(code_of(p))
    ]
    assert offenders == []
