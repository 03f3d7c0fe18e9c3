"""The project's GPU check in one command, for a lent CUDA machine and a bare checkout:

    python -m dwlt_utils.gpu_check [--out results/gpu] [--budget 360]

It needs the machine's own Python with PyTorch, torchvision and pytest, no network and no virtual environment;
papermill, dill, torchattacks and nvImageCodec are optional, and the report names what their absence left out.
Each step runs as a subprocess whose time limit is its share of the budget still left (time a step leaves unused
goes to the steps after it):

- environment: the GPUs (nvidia-smi when present), torch, torchvision, cuDNN, CPUs, the optional packages;
- nccl: one DDP training step under NCCL on every GPU through torchrun, against one process's step;
- gpu_tests, gpu_precision, gpu_fast_path_tests: `pytest -m gpu tests/gpu`, each test's outcome and duration
  written as it ends (tests/outcomes.py); bf16 against fp32 and the fast paths' tests (CUDA graphs and
  torch.compile against eager) apart, each with a share of its own;
- bench: `python -m dwlt_utils.bench --quick --profile` at 224 and 32 px; bench_input: the ImageNet input path;
- bench_cuda_graphs, bench_compile: PGD-10 training at 224 px with each fast path (tests/gpu checks them against
  eager; here they are timed);
- bench_shared: the 32 px figures timed in 4 processes at once, as small runs sharing one GPU would train;
- rehearsal: `pytest -m "rehearsal and gpu" tests/rehearsal`, when papermill is installed.

The report, `OUT/<device>-<date>.json` and `.md`, is rewritten atomically after every step, so a check stopped by
the end of the lease keeps every step it finished. The figures are set against GOALS: a goal not met is reported,
not failed. The exit status is 0 when every check that ran passed, 1 otherwise, and 2 without a CUDA device.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torchvision
from torch.nn.parallel import DistributedDataParallel

from . import distributed, io
from .engine import Precision, generator_for
from .errors import DwltError, check_number
from .train import TrainConfig, make_optimizer, train_step

ROOT = Path(__file__).resolve().parent.parent


# ---- what the figures should reach -------------------------------------------------------------------------
@dataclass(frozen=True)
class Goal:
    figure: str  # a bench figure's name
    px: int
    measure: str  # the figure's field compared: "ours_img_s" or "ratio"
    at_least: float | tuple[str, int]  # a bound, or the (figure, px) whose engine rate is the bound


# On one H200. A goal is judged on the best figure of its kind among the bench steps (eager or a fast path).
GOALS = {
    "PGD-10 training, 224 px, batch 128": Goal("adv_train", 224, "ours_img_s", 800),
    "PGD-10 training, 224 px, against the reference": Goal("adv_train", 224, "ratio", 4.5),
    "clean training, 224 px": Goal("clean_train", 224, "ours_img_s", 5_500),
    "PGD-20 evaluation, 224 px": Goal("pgd20_eval", 224, "ours_img_s", 450),
    "clean training, 32 px": Goal("clean_train", 32, "ours_img_s", 12_000),
    "PGD-10 training, 32 px": Goal("adv_train", 32, "ours_img_s", 1_500),
    "PGD-20 evaluation, 32 px": Goal("pgd20_eval", 32, "ours_img_s", 850),
    "ImageNet JPEG input": Goal("imagenet_input", 224, "ours_img_s", 8_000),
    "ImageNet JPEG input against clean training, 224 px": Goal(
        "imagenet_input", 224, "ours_img_s", ("clean_train", 224)
    ),
}

# What the check leaves out when an optional package is missing.
OPTIONAL_PACKAGES = {
    "papermill": "the CUDA rehearsal (it runs the notebooks with papermill) was not run",
    "dill": "tests that import tests/genuine_files.py (genuine checkpoint files) fail at import",
    "torchattacks": "AutoAttack (dwlt_utils.autoattack) fails wherever a test reaches it",
    "nvidia.nvimgcodec": "the nvimgcodec decoder (NVIDIA's nvImageCodec, pip package nvidia-nvimgcodec-cu13) was "
    "neither tested nor timed",
}


def _best(figures: list[dict], name: str, px: int, measure: str) -> dict | None:
    mine = [f for f in figures if (f["name"], f["px"], f["device"]) == (name, px, "cuda")]
    return max(mine, key=lambda f: f[measure]) if mine else None


def _by(figure: dict) -> str:
    decoder = f", decoder {figure['decoder']}" if figure.get("decoder") else ""
    return f"{figure['ours']}{decoder} ({figure['step']})"


def goal_verdicts(figures: list[dict]) -> list[dict]:
    """Each goal against the best CUDA figure of its kind: met, not met, or not measured."""
    verdicts = []
    for name, goal in GOALS.items():
        best = _best(figures, goal.figure, goal.px, goal.measure)
        bound = goal.at_least
        if isinstance(bound, tuple):
            other = _best(figures, *bound, "ours_img_s")
            bound = other["ours_img_s"] if other else None
        verdict = {"goal": name, "measure": goal.measure, "at_least": bound, "value": None, "by": None}
        if best is None or bound is None:
            verdicts.append({**verdict, "verdict": "not measured"})
            continue
        value = best[goal.measure]
        verdicts.append({**verdict, "value": value, "by": _by(best), "verdict": "met" if value >= bound else "not met"})
    return verdicts


# ---- what the steps leave ---------------------------------------------------------------------------------
def outcomes_of(path: Path) -> dict[str, dict]:
    """Each test's outcome (passed, failed, skipped, or stopped: running when its step ended), seconds and first
    line of message, from the lines `tests/outcomes.py` appends as tests start and end. A line cut short by the
    step's end is left out."""
    outcomes = {}
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event["outcome"] == "running":
            event = {**event, "outcome": "stopped", "seconds": None, "message": "it was running when its step ended"}
        outcomes[event.pop("test")] = event
    return outcomes


class Check:
    """The report being made, rewritten whole (JSON and Markdown, each atomically) after every step."""

    def __init__(self, out: Path, work: Path, device: str, budget: float, date: str | None = None):
        date = date or datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        stem = f"{re.sub(r'[^a-z0-9]+', '-', device.lower()).strip('-')}-{date}"
        self.json_path, self.md_path, self.work = out / f"{stem}.json", out / f"{stem}.md", work
        self.report = {
            "device": device,
            "date": date,
            "revision": _revision(),
            "budget_s": budget,
            "environment": {},
            "missing_packages": {},
            "steps": {},
            "tests": {},
            "figures": [],
            "goals": [],
            "passed": True,
        }

    def record(self, step: str, result: dict) -> None:
        self.report["steps"][step] = result
        self.report["goals"] = goal_verdicts(self.report["figures"])
        self.report["passed"] = all(s["status"] in ("passed", "not run") for s in self.report["steps"].values())
        io.write_text(self.json_path, json.dumps(self.report, indent=2) + "\n")
        io.write_text(self.md_path, render_markdown(self.report))

    @property
    def passed(self) -> bool:
        return self.report["passed"]


def _revision() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    except OSError:  # no git on the machine
        return None
    return done.stdout.strip() or None


# ---- the report in Markdown --------------------------------------------------------------------------------
def _number(value, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    cells = [[str(cell).replace("|", "\\|").replace("\n", " ") for cell in row] for row in rows]
    return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}", *(f"| {' | '.join(row)} |" for row in cells)]


def _environment_lines(env: dict) -> list[str]:
    if not env:
        return ["The environment step left nothing."]
    gpus = "; ".join(
        ", ".join(f"{k} {v}" for k, v in gpu.items()) for gpu in env.get("nvidia_smi") or env.get("gpus", [])
    )
    return [
        f"GPUs ({env.get('gpu_count')}): {gpus}.",
        f"torch {env.get('torch')} (CUDA {env.get('cuda')}), torchvision {env.get('torchvision')}, cuDNN "
        f"{env.get('cudnn')}, Python {env.get('python')}, {env.get('cpu_count')} CPUs.",
    ]


def render_markdown(report: dict) -> str:
    revision = f" (revision {report['revision']})" if report["revision"] else ""
    lines = [
        f"# GPU check: {report['device']}, {report['date']}{revision}",
        "",
        *_environment_lines(report["environment"]),
    ]
    for package, consequence in report["missing_packages"].items():
        lines.append(f"- {package} is not installed: {consequence}.")
    verdict = "every check that ran passed" if report["passed"] else "a check failed"
    lines += ["", f"Budget {report['budget_s']:.0f} s; {verdict}.", "", "## Checks", ""]
    lines += _table(
        ["check", "status", "seconds", "what", "why"],
        [
            [name, s["status"], _number(s.get("seconds"), digits=0), s["what"], s.get("reason") or ""]
            for name, s in report["steps"].items()
        ],
    )
    if report["tests"]:
        lines += ["", "## Tests", ""]
        lines += _table(
            ["test", "outcome", "seconds", "message"],
            [[name, t["outcome"], _number(t["seconds"]), t["message"] or ""] for name, t in report["tests"].items()],
        )
    lines += ["", "## Figures", "", _figures_note(report["environment"]), ""]
    lines += _table(
        ["step", "figure", "px", "batch", "img/s", "reference img/s", "ratio", "GFLOP/img", "TFLOP/s", "peak %"]
        + ["anchor img/s", "anchor %", "ours"],
        [_figure_row(f) for f in report["figures"]],
    )
    lines += _profile_lines(report["figures"])
    lines += _input_stage_lines(report["figures"])
    lines += ["", "## Goals (one H200)", ""]
    lines += _table(
        ["goal", "measure", "at least", "measured", "verdict", "by"],
        [
            [g["goal"], g["measure"], _number(g["at_least"]), _number(g["value"]), g["verdict"], g["by"] or ""]
            for g in report["goals"]
        ],
    )
    return "\n".join(lines) + "\n"


def _profile_lines(figures: list[dict]) -> list[str]:
    profiled = [f for f in figures if f.get("top_work") or f.get("profile_note")]
    if not profiled:
        return []
    note = (
        "A few more steps of each figure under torch's profiler: the share of their wall time the device spent in "
        "kernels (the rest it waited for the host) and the costliest kernels, each with its share of that time."
    )
    rows = [
        [
            f["step"],
            f["name"],
            str(f["px"]),
            _number(f.get("device_busy"), 100),
            "; ".join(f"{w['name']} {w['share']:.0%}" for w in f["top_work"][:3]) if f.get("top_work") else "",
            f.get("profile_note") or "",
        ]
        for f in profiled
    ]
    header = ["step", "figure", "px", "device busy %", "costliest kernels", "note"]
    return ["", "## Where the engine's time goes", "", note, "", *_table(header, rows)]


def _input_stage_lines(figures: list[dict]) -> list[str]:
    staged = [f for f in figures if f.get("worker_ms_per_img") is not None]
    if not staged:
        return []
    note = (
        "Each part of the input path timed alone on one batch: what a loader worker does per image (reading, and "
        "decoding unless the device will), the rate the workers could supply at that, and the rate the main "
        "process could take their batches at (the device's decoding, the copies, the crops and flips)."
    )
    rows = [
        [
            f["step"],
            f["decoder"],
            _number(f["ours_img_s"]),
            _number(f["worker_ms_per_img"], digits=2),
            _number(f["workers_img_s"], digits=0),
            _number(f["main_process_img_s"], digits=0),
        ]
        for f in staged
    ]
    header = ["step", "decoder", "img/s", "worker ms/img", "workers could supply", "main process could take"]
    return ["", "## ImageNet input: where the time goes", "", note, "", *_table(header, rows)]


def _figures_note(env: dict) -> str:
    peak = env.get("peak_tflop_s")
    measured = f"measured in the bench at {peak:,.1f} TFLOP/s" if peak else "as the bench measured it"
    return (
        f"TFLOP/s: the figure's work (FLOPs per image counted by torch) per second; peak %: of the chip's bf16 peak, "
        f"{measured}; anchor: MLPerf Training v4.0, ResNet-50 on 8x H200, about 7,950 img/s per GPU for clean "
        "training, scaled by FLOPs per image (224 px only)."
    )


def _figure_row(f: dict) -> list[str]:
    name = f["name"] if not f.get("decoder") else f"{f['name']} ({f['decoder']})"
    name += f" ×{f['processes']}" if f.get("processes", 1) > 1 else ""
    return [
        f["step"],
        name,
        str(f["px"]),
        str(f["batch"]),
        _number(f["ours_img_s"]),
        _number(f["reference_img_s"]),
        f"{f['ratio']:.2f}x",
        _number(f.get("gflop_per_img"), digits=2),
        _number(f.get("tflop_s")),
        _number(f.get("peak_fraction"), 100),
        _number(f.get("anchor_img_s"), digits=0),
        _number(f.get("anchor_fraction"), 100),
        f["ours"],
    ]


# ---- the steps --------------------------------------------------------------------------------------------
def _nothing_to_read(check: Check, step: Step) -> str | None:
    return None


def _runs_always(check: Check) -> str | None:
    return None


@dataclass(frozen=True)
class Step:
    name: str
    what: str  # one line for the report
    share: float  # its weight in the budget
    command: Callable[[Check, Step], list[str]]
    # What the step's files add to the report; returns why the step failed although it exited with 0, if it did.
    read: Callable[[Check, Step], str | None] = _nothing_to_read
    skip: Callable[[Check], str | None] = _runs_always  # why the step does not run; None: it runs

    def file(self, check: Check, suffix: str) -> Path:
        return check.work / f"{self.name}{suffix}"


def _module(*arguments: str) -> list[str]:
    return [sys.executable, "-m", *arguments]


def _read_environment(check: Check, step: Step) -> str | None:
    env = json.loads(step.file(check, ".json").read_text())
    check.report["environment"] = env
    check.report["missing_packages"] = {
        package: OPTIONAL_PACKAGES[package] for package, present in env["optional_packages"].items() if not present
    }
    return None


def _read_tests(check: Check, step: Step) -> str | None:
    check.report["tests"].update(outcomes_of(step.file(check, ".jsonl")))
    return None


def _read_figures(check: Check, step: Step) -> str | None:
    path = step.file(check, ".json")
    figures = [{**figure, "step": step.name} for figure in json.loads(path.read_text())] if path.exists() else []
    check.report["figures"] = [f for f in check.report["figures"] if f["step"] != step.name] + figures
    return None


NCCL_TOLERANCE = 1e-5  # fp32 on both sides: what is left is the order of the sums


def _read_nccl(check: Check, step: Step) -> str | None:
    found = json.loads(step.file(check, ".json").read_text())
    check.report["nccl"] = found
    if found["ranks_differ_by"] != 0:
        return f"the ranks' parameters differ by up to {found['ranks_differ_by']:g} after the step"
    if found["gap_to_one_process"] > NCCL_TOLERANCE:
        return f"the DDP step is {found['gap_to_one_process']:.2e} (relative) from one process's step"
    return None


def _pytest(check: Check, step: Step, marker: str, folder: str, *extra: str) -> list[str]:
    """pytest with each test's outcome written as it ends (tests/outcomes.py), kept when the step is stopped."""
    outcomes = ["-p", "outcomes", "--outcomes", str(step.file(check, ".jsonl"))]
    return _module("pytest", "-m", marker, folder, "-p", "no:cacheprovider", *outcomes, "-q", *extra)


def _bench(check: Check, step: Step, *arguments: str) -> list[str]:
    return _module("dwlt_utils.bench", "--quick", *arguments, "--json", str(step.file(check, ".json")))


def _nccl(check: Check, step: Step) -> list[str]:
    launch = distributed.Launch(nproc_per_node=torch.cuda.device_count())
    return launch.command("dwlt_utils.gpu_check", ["--nccl-step", str(step.file(check, ".json"))])


def _without_papermill(check: Check) -> str | None:
    if importlib.util.find_spec("papermill") is None:
        return "papermill is not installed, and the rehearsal runs the notebooks with it"
    return None


IMAGENET_INPUT_IMAGES = 1024
FAST_PATH_FIGURE = ("--figures", "adv_train", "--px", "224")
FAST_PATH_TESTS = "tests/gpu/test_fast_paths.py"
PRECISION_TESTS = "tests/gpu/test_precision.py"
SHARED_PROCESSES = 4  # 32 px runs timed at once: what `cli sweep --per-gpu 4` would train on one GPU
# The steps that time the engine and the input as the notebooks run them by default: what `cli plan --bench
# REPORT` prices from.
EAGER_BENCH_STEPS = ("bench", "bench_input", "bench_shared")


def _gpu_tests(*arguments: str) -> Callable[[Check, Step], list[str]]:
    # tests/conftest.py asks for the notebook suites' packages (papermill) before it collects anything; the GPU
    # tests need none of them, so conftest files above tests/gpu are left out.
    return lambda c, s: _pytest(c, s, "gpu", *arguments, "--confcutdir", "tests/gpu")


# In the order they run: the checks of what runs by default and the figures the goals judge first, the compiler
# last. Each share is in proportion to the seconds the step was estimated to take on one H200 (the 2026-11-30 run:
# two GPU tests took 28 s, the bf16 runs 58 s in parallel, a compiled ResNet-50 a minute to warm up); a step
# that ends early leaves its time to the later ones, and one stopped at its limit keeps what it finished (each
# test's outcome, each figure).
STEPS = [
    Step(
        "environment",
        "GPUs, driver, torch, torchvision, cuDNN, CPUs, optional packages",
        4,
        lambda c, s: _module("dwlt_utils.gpu_check", "--environment", str(s.file(c, ".json"))),
        _read_environment,
    ),
    Step("nccl", "one DDP step under NCCL on every GPU (torchrun) against one process's step", 6, _nccl, _read_nccl),
    Step(
        "gpu_tests",
        f"pytest -m gpu tests/gpu, but for {FAST_PATH_TESTS} and {PRECISION_TESTS}",
        18,
        _gpu_tests("tests/gpu", "--ignore", FAST_PATH_TESTS, "--ignore", PRECISION_TESTS),
        _read_tests,
    ),
    Step(
        "bench",
        "bench --quick --profile at 224 and 32 px: the engine against the reference loop, and where its time goes",
        20,
        lambda c, s: _bench(c, s, "--profile"),
        _read_figures,
    ),
    # Apart from the engine's figures, so that neither can take the other's time.
    Step(
        "bench_input",
        f"bench --quick --input-only: the ImageNet input path on {IMAGENET_INPUT_IMAGES} JPEGs, each decoder",
        18,
        lambda c, s: _bench(c, s, "--input-only", "--imagenet-input", str(IMAGENET_INPUT_IMAGES)),
        _read_figures,
    ),
    Step(
        "bench_cuda_graphs",
        "bench --quick --cuda-graphs, PGD-10 training at 224 px",
        7,
        lambda c, s: _bench(c, s, "--cuda-graphs", *FAST_PATH_FIGURE),
        _read_figures,
    ),
    Step(
        "bench_shared",
        f"bench --quick at 32 px in {SHARED_PROCESSES} processes at once: small runs sharing the GPU",
        10,
        lambda c, s: _bench(c, s, "--px", "32", "--processes", str(SHARED_PROCESSES)),
        _read_figures,
    ),
    Step(
        "gpu_precision",
        f"pytest -m gpu {PRECISION_TESTS}: bf16 training against fp32 over eight seeds, in parallel",
        22,
        _gpu_tests(PRECISION_TESTS),
        _read_tests,
    ),
    # Apart, so that a compilation slower than planned stops at its own share, not the other tests'.
    Step(
        "gpu_fast_path_tests",
        f"pytest -m gpu {FAST_PATH_TESTS}: CUDA graphs and torch.compile against the eager step",
        16,
        _gpu_tests(FAST_PATH_TESTS),
        _read_tests,
    ),
    Step(
        "bench_compile",
        "bench --quick --compile, PGD-10 training at 224 px",
        17,
        lambda c, s: _bench(c, s, "--compile", *FAST_PATH_FIGURE),
        _read_figures,
    ),
    Step(
        "rehearsal",
        'pytest -m "rehearsal and gpu" tests/rehearsal',
        10,
        lambda c, s: _pytest(c, s, "rehearsal and gpu", "tests/rehearsal"),
        _read_tests,
        _without_papermill,
    ),
]


# ---- running them -----------------------------------------------------------------------------------------
OUTPUT_TAIL = 6000  # characters of a step's output kept in the report
LEAST_TIMEOUT_S = 5


def _stop(process: subprocess.Popen) -> None:
    """End a step and everything it started (pytest's worker processes, torchrun's ranks): its process group."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue


def _environment_of_steps() -> dict:
    """The steps run from the checkout as is: the package and tests/ importable, output unbuffered so that a
    stopped step's log is complete."""
    path = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def run_step(step: Step, check: Check, timeout: float) -> dict:
    """Run one step with its time limit; its status, output tail and what its files add to the report."""
    command = step.command(check, step)
    log = step.file(check, ".log")
    started = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=_environment_of_steps(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(process)
            returncode = None
    result = {
        "what": step.what,
        "command": " ".join(command),
        "timeout_s": round(timeout, 1),
        "seconds": round(time.monotonic() - started, 1),
        "returncode": returncode,
        "output_tail": log.read_text(errors="replace")[-OUTPUT_TAIL:],
    }
    problem = _read_what_is_there(step, check)
    if returncode is None:
        return {**result, "status": "timed out", "reason": f"stopped at its limit of {timeout:.0f} s"}
    if returncode != 0:
        return {**result, "status": "failed", "reason": f"exited with status {returncode}" + _tail_line(result)}
    return {**result, "status": "failed" if problem else "passed", "reason": problem}


def _read_what_is_there(step: Step, check: Check) -> str | None:
    """What the step's files add, even from a step that failed or was stopped (a bench's finished figures, the
    tests that ran); None when it left no file to read."""
    try:
        return step.read(check, step)
    except FileNotFoundError as err:
        return f"it left no {Path(err.filename).name}"
    except ValueError as err:  # a file cut short by the step's end
        return f"what it left could not be read ({err})"


def _tail_line(result: dict) -> str:
    lines = [line for line in result["output_tail"].splitlines() if line.strip()]
    return f": {lines[-1].strip()[:300]}" if lines else ""


def timeout_for(share: float, shares_left: float, seconds_left: float) -> float:
    """A step's time limit: its share of the budget left among the steps still to run."""
    return max(seconds_left, 0) * share / shares_left


def run_steps(steps: list[Step], check: Check, budget: float) -> None:
    """Run the steps in order within `budget` seconds, rewriting the report after each."""
    deadline = time.monotonic() + budget
    for k, step in enumerate(steps):
        reason = step.skip(check)
        if reason:
            check.record(step.name, {"what": step.what, "status": "not run", "reason": reason})
            continue
        shares_left = sum(later.share for later in steps[k:] if later.skip(check) is None)
        timeout = timeout_for(step.share, shares_left, deadline - time.monotonic())
        if timeout < LEAST_TIMEOUT_S:
            check.record(step.name, {"what": step.what, "status": "timed out", "reason": "the budget was spent"})
            continue
        print(f"[gpu_check] {step.name}: {step.what} (at most {timeout:.0f} s)", flush=True)
        result = run_step(step, check, timeout)
        print(f"[gpu_check] {step.name}: {result['status']} in {result['seconds']:.0f} s", flush=True)
        check.record(step.name, result)


# ---- what the subprocesses run ----------------------------------------------------------------------------
def _nvidia_smi() -> list[dict] | None:
    fields = ("name", "driver_version", "memory.total", "clocks.max.sm", "power.limit")
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(
        ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"], capture_output=True, text=True
    )
    return [dict(zip(fields, (v.strip() for v in line.split(",")))) for line in done.stdout.splitlines() if line]


def _importable(package: str) -> bool:
    try:
        importlib.import_module(package)
    except Exception:  # a package that fails to import for any reason is as good as missing
        return False
    return True


def environment() -> dict:
    """What the machine is: its GPUs, the versions that run on them, its CPUs and the optional packages."""
    count = torch.cuda.device_count()
    return {
        "gpu_count": count,
        "gpus": [
            {
                "name": torch.cuda.get_device_name(i),
                "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
            }
            for i in range(count)
        ],
        "nvidia_smi": _nvidia_smi(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "torchvision": torchvision.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "optional_packages": {package: _importable(package) for package in OPTIONAL_PACKAGES},
    }


NCCL_RECIPE = TrainConfig(epochs=1, batch_size=8, lr=0.1, weight_decay=5e-4)


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def nccl_step(out: Path) -> None:
    """One training step of the engine under DDP on every GPU (a torchrun worker, NCCL): rank 0 writes how far
    the ranks' parameters are apart after it (DDP keeps them equal) and from one process's step on the whole
    batch (the gradients of equal shards, averaged, are the whole batch's)."""
    ranks = distributed.init("cuda")
    device = torch.device("cuda", ranks.local)
    torch.backends.cudnn.allow_tf32 = False  # fp32 on both sides, so that they differ by rounding alone
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    model.to(device)
    alone = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(8 * ranks.world, 3, 16, 16, generator=generator).to(device)
    y = torch.randint(0, 3, (len(x),), generator=generator).to(device)
    precision = Precision.for_device(device, bf16=False, channels_last=False)
    mine = ranks.shard(torch.arange(len(y), device=device))
    # DDP itself even on one GPU, where `distributed.wrap` leaves the model alone: NCCL averages the gradients.
    shared = DistributedDataParallel(model, device_ids=[device])
    for net, inputs, labels in ((shared, x[mine], y[mine]), (alone, x, y)):
        optimizer = make_optimizer(distributed.local(net), NCCL_RECIPE)
        train_step(
            net,
            inputs,
            labels,
            optimizer,
            attack=None,
            masked=None,
            generator=generator_for(device, 0),
            precision=precision,
        )
    mine_flat, alone_flat = _flat(model), _flat(alone)
    low, high = mine_flat.clone(), mine_flat.clone()
    dist.all_reduce(low, dist.ReduceOp.MIN)
    dist.all_reduce(high, dist.ReduceOp.MAX)
    if ranks.main:
        gap = (mine_flat - alone_flat).abs().max() / alone_flat.abs().max()
        found = {"world": ranks.world, "backend": dist.get_backend(), "ranks_differ_by": float((high - low).max())}
        io.write_json(out, {**found, "gap_to_one_process": float(gap)})
    dist.destroy_process_group()


# ---- the command ------------------------------------------------------------------------------------------
NO_CUDA = (
    "The GPU check needs a CUDA device; this machine has none (torch.cuda.is_available() is False), so it ran "
    "nothing and wrote nothing."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dwlt_utils.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu"), help="folder of the report")
    parser.add_argument("--budget", type=float, default=360, help="seconds for every step together")
    inner = parser.add_argument_group("run by the check's own steps")
    inner.add_argument("--environment", type=Path, metavar="JSON", help="write what the machine is to JSON")
    inner.add_argument("--nccl-step", type=Path, metavar="JSON", help="one DDP step as a torchrun worker")
    return parser


def run_check(out: Path, budget: float) -> Check:
    """Run every step on this machine's CUDA devices and write the report to `out`."""
    check_number("--budget", budget, 60, 86_400)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as work:
        report = Check(out, Path(work), torch.cuda.get_device_name(0), budget)
        run_steps(STEPS, report, budget)
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.environment:
        io.write_json(args.environment, environment())
        return 0
    if args.nccl_step:
        nccl_step(args.nccl_step)
        return 0
    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    try:
        report = run_check(args.out, args.budget)
    except DwltError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 2
    print(f"[gpu_check] wrote {report.json_path} and {report.md_path}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
