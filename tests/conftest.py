"""What every suite shares: its prerequisites from outside the package, and an account of what did not run.

A test that needs something `make install` brings (Fashion-MNIST, chromium, the dev extra's packages,
torchattacks) asks for it through a fixture below. When it is missing the test fails with one sentence saying
what is missing and how to get it: a skip would let a run that executed none of those tests end green. Only the
GPU tests stay out of the default run, deselected by their marker, and the run's summary says so.
"""

import importlib
import importlib.util
from collections import Counter
from types import ModuleType

import pytest

from dwlt_utils import prerequisites

# Imported by the helpers every notebook suite shares (executed.py): without them not even collection can
# proceed, so the run stops at once with the sentence.
NEEDED_TO_COLLECT = ("papermill", "nbformat")
# Markers that keep tests out of the default run (pyproject's addopts), in the order a test is counted under.
DESELECTING_MARKERS = ("gpu", "slow", "rehearsal")
DESELECTED = pytest.StashKey[list]()


def missing_module_sentence(module: str) -> str:
    return (
        f"{module} is not installed: run `make install`, which installs the project's dev extra "
        '(pip install -e ".[dev]") and torchattacks (pip install --no-deps torchattacks).'
    )


def require_module(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(missing_module_sentence(module), pytrace=False)


def pytest_configure(config):
    config.stash[DESELECTED] = []
    for module in NEEDED_TO_COLLECT:
        if importlib.util.find_spec(module) is None:
            raise pytest.UsageError(missing_module_sentence(module))


@pytest.fixture(scope="session")
def fashion_mnist() -> None:
    """The quick profile's source data (Debian's package or the downloaded files), which every notebook reads."""
    if problem := prerequisites.fashion_mnist_problem():
        pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def chromium() -> str:
    if path := prerequisites.browser():
        return path
    pytest.fail(
        f"chromium is not installed: run `make install` as root (or with passwordless sudo), or "
        f"sudo apt-get install {prerequisites.BROWSER_PACKAGE}.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def sync_playwright():
    return require_module("playwright.sync_api").sync_playwright


@pytest.fixture(scope="session")
def jupyterlab() -> ModuleType:
    return require_module("jupyterlab")


@pytest.fixture(scope="session")
def torchattacks() -> ModuleType:
    return require_module("torchattacks")


# ---- what did not run


def pytest_deselected(items):
    if items:
        items[0].config.stash[DESELECTED].extend(items)


def deselected_by(item) -> str | None:
    """The first marker of DESELECTING_MARKERS that `item` carries; None when something else deselected it."""
    return next((m for m in DESELECTING_MARKERS if item.get_closest_marker(m)), None)


def skip_reason(report) -> str:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return reason.removeprefix("Skipped: ")


def not_run_lines(deselected: list, skipped: list) -> list[str]:
    lines = []
    counts = Counter(deselected_by(item) for item in deselected)
    if others := counts.pop(None, 0):
        lines.append(f"{others} deselected by -k or another filter.")
    if counts:
        by = ", ".join(f"{marker} {count}" for marker, count in counts.most_common())
        lines.append(f"{counts.total()} deselected by marker ({by}); `-m <marker>` runs a marker's tests.")
    reasons = Counter(skip_reason(report) for report in skipped)
    lines += [f"{count} skipped: {reason}" for reason, count in reasons.most_common()]
    return lines or ["Every collected test ran."]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if config.option.collectonly:
        return
    terminalreporter.section("what this run did not run")
    for line in not_run_lines(config.stash.get(DESELECTED, []), terminalreporter.stats.get("skipped", [])):
        terminalreporter.write_line(line)
