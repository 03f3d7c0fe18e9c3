"""Command line: sweep notebook cells, render executed notebooks, run the quick demo, check committed notebooks.

    python -m dwlt_utils.cli sweep notebooks/04_adv_transfer.ipynb -p quick True \\
        --grid pretraining=standard,fast_adv,adv --grid sparsity=0.36,0.7903,0.9141 --jobs 4
    python -m dwlt_utils.cli render runs/executed/*.ipynb --out rendered
    python -m dwlt_utils.cli demo
    python -m dwlt_utils.cli check notebooks/*.ipynb

A sweep runs one papermill process per cell, `--jobs` at a time; each job gets a share of the CPU cores
and, when there are GPUs, one of them (round robin). Executed notebooks are kept, named after their
parameters, so every cell of a sweep can be opened and read.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .notebook import working_root
from .paths import executed_dir, resolve_folder
from .vocabulary import PRETRAININGS

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_RUN_ROOT = "runs"  # the default of every notebook's run_root parameter
NOTEBOOKS = REPO / "notebooks"


def parse_value(text: str):
    """A command-line value as papermill's -p reads it: a Python literal when it is one, else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


@dataclass
class Job:
    notebook: Path
    output: Path
    parameters: dict = field(default_factory=dict)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "papermill", str(self.notebook), str(self.output), "--log-level", "WARNING"]
        for name, value in self.parameters.items():
            cmd += ["-y", f"{name}: {value!r}"] if not isinstance(value, str) else ["-r", name, value]
        return cmd


def slug(parameters: dict) -> str:
    text = "_".join(f"{k}-{v}" for k, v in parameters.items()) or "defaults"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def sweep_dir(fixed: dict) -> Path:
    """Where a sweep keeps its executed notebooks: in the run root its notebooks use, resolved as they
    resolve it (the notebooks' default run root when the sweep does not set one)."""
    return executed_dir(resolve_folder("run_root", fixed.get("run_root", NOTEBOOK_RUN_ROOT), working_root()))


def grid_jobs(notebook: Path, fixed: dict, grid: dict[str, list], out: Path) -> list[Job]:
    names = list(grid)
    jobs = []
    for values in itertools.product(*(grid[n] for n in names)) if names else [()]:
        varying = dict(zip(names, values))
        jobs.append(Job(notebook, out / notebook.stem / f"{slug(varying)}.ipynb", {**fixed, **varying}))
    return jobs


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def run_jobs(jobs: list[Job], *, parallel: int = 1, quiet: bool = False) -> list[tuple[Job, int, float]]:
    """Run papermill jobs, `parallel` at a time; returns (job, exit code, seconds) in job order."""
    cores = os.cpu_count() or 1
    gpus = _gpu_count()

    def run(index_job: tuple[int, Job]) -> tuple[Job, int, float]:
        index, job = index_job
        job.output.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, DWLT_THREADS=str(max(1, cores // parallel)))
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
        started = time.perf_counter()
        proc = subprocess.run(job.command(), env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if not quiet:
            status = "ok" if proc.returncode == 0 else f"FAILED ({proc.returncode})"
            print(f"[{seconds:6.1f} s] {status} {job.notebook.name} {job.parameters}", flush=True)
            if proc.returncode:
                print("\n".join(proc.stderr.strip().splitlines()[-3:]), flush=True)
        return job, proc.returncode, seconds

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(run, enumerate(jobs)))


def render(notebooks: list[Path], out: Path) -> list[Path]:
    """Executed notebooks to HTML (nbconvert), one file each in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nbconvert",
            "--to",
            "html",
            "--log-level",
            "ERROR",
            "--output-dir",
            str(out),
            *map(str, notebooks),
        ],
        check=True,
    )
    return [out / f"{nb.stem}.html" for nb in notebooks]


def bare_headings(markdown: str) -> list[str]:
    """The section headings of a markdown cell with no sentence under them before the next heading."""
    lines = [line for line in markdown.splitlines() if line.strip()]
    return [line for line, after in zip(lines, [*lines[1:], "#"]) if line.startswith("##") and after.startswith("#")]


def unclean(notebook: Path) -> list[str]:
    """Why a notebook may not be committed: outputs, execution counts, no kernelspec, not one parameters cell,
    or a section heading that no sentence explains."""
    nb = nbformat.read(notebook, as_version=4)
    problems = []
    if any(c.cell_type == "code" and (c.outputs or c.execution_count) for c in nb.cells):
        problems.append(f"{notebook} holds outputs (clear them before committing)")
    if not nb.metadata.get("kernelspec"):
        problems.append(f"{notebook} has no kernelspec")
    parameter_cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(parameter_cells) != 1:
        problems.append(f"{notebook} needs exactly one cell tagged 'parameters'")
    for heading in (h for c in nb.cells if c.cell_type == "markdown" for h in bare_headings(c.source)):
        problems.append(f"{notebook} has the heading {heading!r} with no sentence under it")
    return problems


# The demo: the whole chain in the quick profile. Every transfer cell for three pre-trainings at three
# ladder sparsities (and the dense models), plus data-limited cells at 25% of the data at two of them.
DEMO_SPARSITIES = [0.36, 0.7903, 0.9141]
DEMO_LIMITED_SPARSITIES = [0.7903, 0.9141]
DEMO_PRETRAININGS = list(PRETRAININGS)


def demo(run_root: Path, out: Path, data_root: Path, parallel: int) -> int:
    common = {"quick": True, "run_root": str(run_root), "data_root": str(data_root)}
    executed = executed_dir(run_root)
    cell = {"pretraining": "adv", "sparsity": 0.9141}  # the card's cell: each transfer notebook's showcase
    stages = [
        ("01", [Job(NOTEBOOKS / "01_load_pretrained.ipynb", executed / "01_load_pretrained.ipynb", common)]),
        (
            "02",
            grid_jobs(
                NOTEBOOKS / "02_imp.ipynb", {**common, "levels": 11}, {"pretraining": DEMO_PRETRAININGS}, executed
            ),
        ),
    ]
    for name in ("03_std_transfer", "04_adv_transfer"):
        dense = grid_jobs(
            NOTEBOOKS / f"{name}.ipynb",
            {**common, "ticket": "dense", "sparsity": 0.0},
            {"pretraining": DEMO_PRETRAININGS},
            executed,
        )
        tickets = grid_jobs(
            NOTEBOOKS / f"{name}.ipynb",
            common,
            {"pretraining": DEMO_PRETRAININGS, "sparsity": DEMO_SPARSITIES},
            executed,
        )
        stages.append((name[:2], dense + tickets))
    stages.append(
        (
            "05",
            grid_jobs(
                NOTEBOOKS / "05_data_limited.ipynb",
                {**common, "data_fraction": 0.25},
                {"pretraining": DEMO_PRETRAININGS, "sparsity": DEMO_LIMITED_SPARSITIES},
                executed,
            ),
        )
    )
    stages.append(("06", [Job(NOTEBOOKS / "06_figures.ipynb", executed / "06_figures.ipynb", common)]))
    started = time.perf_counter()
    shown = []
    for stage, jobs in stages:
        outcomes = run_jobs(jobs, parallel=parallel)
        failed = [job for job, code, _ in outcomes if code]
        if failed:
            print(f"demo: {len(failed)} job(s) of notebook {stage} failed; see {failed[0].output}", file=sys.stderr)
            return 1
        showcase = next((j for j in jobs if all(j.parameters.get(k, v) == v for k, v in cell.items())), jobs[-1])
        shown.append(showcase.output)
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in shown:
        target = out / f"{path.parent.name if path.parent != executed else path.stem}.ipynb"
        shutil.copyfile(path, target)
        copies.append(target)
    html = render(copies, out)
    print(f"demo: finished in {time.perf_counter() - started:.0f} s; executed notebooks and HTML in {out}:")
    for path in html:
        print(f"  {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dwlt_utils.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="run a notebook for every combination of --grid values")
    sweep.add_argument("notebook", type=Path)
    sweep.add_argument(
        "-p",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a fixed parameter (a Python literal or a string)",
    )
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="a parameter and its values, comma-separated",
    )
    sweep.add_argument("--jobs", type=int, default=1, help="cells run at once (one GPU each when there are GPUs)")
    sweep.add_argument(
        "--out", type=Path, default=None, help="where executed notebooks go (default: executed/ in the run root)"
    )
    rend = sub.add_parser("render", help="executed notebooks to HTML")
    rend.add_argument("notebooks", nargs="+", type=Path)
    rend.add_argument("--out", type=Path, default=Path("rendered"))
    dem = sub.add_parser("demo", help="the whole chain 01→06 in the quick profile, rendered to HTML")
    dem.add_argument(
        "--run-root",
        type=Path,
        default=Path("runs"),
        help="the notebooks' default: later runs find its sources and tickets",
    )
    dem.add_argument("--data-root", type=Path, default=Path("data"))
    dem.add_argument("--out", type=Path, default=Path("rendered"))
    dem.add_argument("--jobs", type=int, default=2)
    chk = sub.add_parser("check", help="fail when a notebook has outputs or no kernelspec")
    chk.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)

    if args.command == "sweep":
        grid = {}
        for item in args.grid:
            name, _, values = item.partition("=")
            if not name or not values:
                parser.error(f"--grid takes NAME=V1,V2,...; got {item!r}")
            grid[name] = [parse_value(v) for v in values.split(",")]
        fixed = {name: parse_value(value) for name, value in args.p}
        out = args.out or sweep_dir(fixed)
        outcomes = run_jobs(grid_jobs(args.notebook, fixed, grid, out), parallel=args.jobs)
        return int(any(code for _, code, _ in outcomes))
    if args.command == "render":
        for path in render(args.notebooks, args.out):
            print(path)
        return 0
    if args.command == "demo":
        return demo(args.run_root, args.out, args.data_root, args.jobs)
    problems = [p for nb in args.notebooks for p in unclean(nb)]
    print("\n".join(problems) or f"{len(args.notebooks)} notebooks are clean")
    return int(bool(problems))


if __name__ == "__main__":
    sys.exit(main())
