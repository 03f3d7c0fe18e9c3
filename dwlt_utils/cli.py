"""Command line: plan, sweep and search notebook executions and see their state, render executed notebooks,
run the quick demo, check committed notebooks.

    python -m dwlt_utils.cli sweep notebooks/04_adv_transfer.ipynb -p quick True \\
        --grid pretraining=standard,fast_adv,adv --grid sparsity=0.36,0.7903,0.9141 --jobs 4
    python -m dwlt_utils.cli sweep notebooks/04_adv_transfer.ipynb --grid sparsity=0.7903,0.9141 \\
        --executor slurm --partition gpu --time 720 --sbatch account=mylab
    python -m dwlt_utils.cli status notebooks/04_adv_transfer.ipynb --grid sparsity=0.7903,0.9141
    python -m dwlt_utils.cli search --pretraining adv --dataset cifar10 --seeds 1,2,3 --executor slurm
    python -m dwlt_utils.cli plan paper --gpus 64 --bench bench.json
    python -m dwlt_utils.cli render runs/executed/04_adv_transfer/*.ipynb --out rendered
    python -m dwlt_utils.cli demo
    python -m dwlt_utils.cli results
    python -m dwlt_utils.cli check notebooks/*.ipynb

A sweep executes its notebook once per combination of its grid, each execution a submitit job
(`dwlt_utils.sweeps`): on this machine, `--jobs` at a time, one GPU each when there are GPUs (or `--per-gpu K`
on one); or on Slurm, as one job array. It submits only the executions that are not done, so it can be run
again after a crash.
Executed notebooks and logs are kept, named after their parameters, so every execution can be opened and
read.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pandas as pd

from . import __version__, costs, paths, plans, search, sweeps
from .errors import DwltError, FileFormatError, InputError, check_number, naming_os_errors, said
from .io import write_text
from .notebook import NOTEBOOKS
from .paths import executed_dir
from .profiles import get_profile
from .results import git_revision
from .results import load as load_records
from .sweeps import REPO, grid_executions, parse_grid, parse_value, run_local, sweep_dir
from .vocabulary import PRETRAININGS

__all__ = ["NOTEBOOKS", "REPO", "main"]


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """The notebook a command was given, or one sentence saying why `path` names none."""
    with naming_os_errors(path, "read the notebook"):
        raw = path.read_bytes()
    try:
        return nbformat.reads(raw.decode("utf-8"), as_version=4)
    except Exception as err:  # nbformat raises many types: not UTF-8, not JSON, JSON of another layout
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise FileFormatError(
            f"{path} is not a Jupyter notebook ({reason}); give a notebook file, e.g. notebooks/04_adv_transfer.ipynb."
        ) from None


def parameter_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The cells papermill gives parameters to."""
    return [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]


def sweep_notebook(path: Path) -> Path:
    """A notebook a sweep can give parameters to, or one sentence saying why `path` is none."""
    if not parameter_cells(read_notebook(path)):
        raise InputError(
            f"{path} has no cell tagged 'parameters', so a sweep cannot give it any; give one of the notebooks in "
            f"{NOTEBOOKS}."
        )
    return path


def check_executor(executor: str) -> None:
    """Refuse Slurm where there is none, before anything is written."""
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise InputError(
            "--executor slurm submits with Slurm's sbatch, which is not on PATH on this machine; run the command "
            "on a login node of the cluster, or use --executor local."
        )


def render(notebooks: list[Path], out: Path) -> list[Path]:
    """Executed notebooks to HTML (nbconvert), one file each in `out`."""
    for notebook in notebooks:
        read_notebook(notebook)
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
    nb = read_notebook(notebook)
    problems = []
    if any(c.cell_type == "code" and (c.outputs or c.execution_count) for c in nb.cells):
        problems.append(f"{notebook} holds outputs (clear them before committing)")
    if not nb.metadata.get("kernelspec"):
        problems.append(f"{notebook} has no kernelspec")
    if len(parameter_cells(nb)) != 1:
        problems.append(f"{notebook} needs exactly one cell tagged 'parameters'")
    for heading in (h for c in nb.cells if c.cell_type == "markdown" for h in bare_headings(c.source)):
        problems.append(f"{notebook} has the heading {heading!r} with no sentence under it")
    return problems


@dataclass(frozen=True)
class Chain:
    """The executions of a quick-profile run of the whole chain: every pre-training's dense model and IMP
    tickets at `sparsities` in both regimes, and at `limited_sparsities` on `data_fraction` of the data
    (notebook 05), each (pre-training, sparsity) once per seed of its pre-training."""

    sparsities: tuple[float, ...]
    limited_sparsities: tuple[float, ...]
    data_fraction: float
    seeds: dict[str, tuple[int, ...]]


# The demo: under ten minutes on 2 cores. The standard and the adversarial pre-training, the paper's contrast;
# the adversarial one with two seeds, so that 06 draws its spread, the standard one with one (06 marks its
# points as single-seed).
DEMO = Chain((0.7903, 0.9141), (0.9141,), 0.25, {"standard": (1,), "adv": (1, 2)})
# The committed results (`results/quick/`): every pre-training with three seeds.
RESULTS = Chain((0.36, 0.7903, 0.9141), (0.7903, 0.9141), 0.25, {p: (1, 2, 3) for p in PRETRAININGS})
RESULTS_COMMAND = "make results"
SHOWCASE = {"pretraining": "adv", "sparsity": 0.9141, "seed": 1}  # the executed notebooks the demo renders


def chain_stages(chain: Chain, common: dict, executed: Path) -> list[tuple[str, list[sweeps.Execution]]]:
    """The chain's executions, stage by stage. Dense models go first and the executions of one group are
    spread apart, so that two parallel jobs never wait on one dense model."""

    def notebook(name: str) -> Path:
        return NOTEBOOKS / f"{name}.ipynb"

    def executions(name: str, fixed: dict, sparsities: tuple[float, ...]) -> list[sweeps.Execution]:
        grids = [
            {"sparsity": [s], "pretraining": [p], "seed": list(seeds)}
            for s in sparsities
            for p, seeds in chain.seeds.items()
        ]
        return [e for grid in grids for e in grid_executions(notebook(name), {**common, **fixed}, grid, executed)]

    pretrainings = {"pretraining": list(chain.seeds)}
    stages = [
        (
            "01",
            grid_executions(
                notebook("01_load_pretrained"), {**common, "pretrainings": list(chain.seeds)}, {}, executed
            ),
        ),
        ("02", grid_executions(notebook("02_imp"), {**common, "levels": 11}, pretrainings, executed)),
    ]
    # Every cell is also tested on its stand-in's corrupted test images: seconds, and 06 draws them.
    corrupted = {"eval_corruptions": True}
    for name in ("03_std_transfer", "04_adv_transfer"):
        dense = executions(name, {"ticket": "dense", **corrupted}, (0.0,))
        stages.append((name[:2], dense + executions(name, corrupted, chain.sparsities)))
    limited = {"data_fraction": chain.data_fraction, **corrupted}
    stages.append(("05", executions("05_data_limited", limited, chain.limited_sparsities)))
    return stages


def run_chain(chain: Chain, run_root: Path, out: Path, data_root: Path, parallel: int, results: Path | None) -> int:
    """Run a chain, then 06 on its records; render the showcase execution of each notebook to HTML in `out`.
    With `results`, 06 writes its tables and figures to `<results>/quick/`, with how they were made."""
    common = {"quick": True, "run_root": str(run_root), "data_root": str(data_root)}
    executed = executed_dir(run_root)
    # The demo's tables go to its run root: results/quick/ holds the committed ones.
    tables = (
        {"results_dir": str(results.resolve()), "overwrite_tables": True}
        if results
        else {"results_dir": str(run_root / "results")}
    )
    stages = [
        *chain_stages(chain, common, executed),
        ("06", grid_executions(NOTEBOOKS / "06_figures.ipynb", {**common, **tables}, {}, executed)),
    ]
    started = time.perf_counter()
    shown = []
    for stage, executions in stages:
        finished = run_local(executions, parallel=parallel)
        failed = [e for e in executions if not finished[e]]
        if failed:
            print(
                f"demo: {len(failed)} execution(s) of notebook {stage} failed; see {failed[0].output}", file=sys.stderr
            )
            return 1
        showcase = next(
            (e for e in executions if all(e.parameters.get(k, v) == v for k, v in SHOWCASE.items())), executions[-1]
        )
        shown.append(showcase.output)
    seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in shown:
        target = out / f"{path.parent.name}.ipynb"
        shutil.copyfile(path, target)
        copies.append(target)
    html = render(copies, out)
    if results:
        readme = paths.results_readme(results / "quick")
        measured_at = sorted(set(load_records(run_root).git_rev))
        written = sorted(p.name for p in readme.parent.iterdir() if p != readme)
        write_text(readme, provenance(chain, seconds, measured_at, written))
    print(f"demo: finished in {seconds:.0f} s; executed notebooks and HTML in {out}:")
    for path in html:
        print(f"  {path}")
    return 0


def provenance(chain: Chain, seconds: float, measured_at: list[str], written: list[str]) -> str:
    """How the committed results were made: the command, the revision, the versions and the run's grid."""
    import torch
    import torchvision

    revision = git_revision() or "(not a git checkout)"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", "dwlt_utils", "notebooks"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.strip()
    seeds = ", ".join(f"{p} {list(s)}" for p, s in chain.seeds.items())
    lines = [
        "# Results of the quick profile (stand-in data, small model: not paper results)",
        "",
        f"Written by `{RESULTS_COMMAND}`; never edited by hand. It took {seconds / 60:.0f} minutes on this machine",
        f"({os.cpu_count()} CPU cores); cells already recorded under its run root are read back, not retrained.",
        "",
        f"- revision: {revision}{' (with uncommitted changes)' if dirty else ''}",
        f"- records measured at revision(s): {', '.join(measured_at)}",
        f"- versions: dwlt {__version__}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}",
        f"- made: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- cells: the dense models and IMP tickets at sparsities {list(chain.sparsities)}, standard and "
        f"adversarial transfer; data-limited transfer on {chain.data_fraction:g} of the data at "
        f"{list(chain.limited_sparsities)}; seeds: {seeds}; each also tested on stand-in corruptions of its test "
        "images",
        "",
        "Notebook 06 wrote its tables and figures here: " + ", ".join(f"`{name}`" for name in written) + ".",
    ]
    return "\n".join(lines) + "\n"


def _grid_arguments(parser: argparse.ArgumentParser) -> None:
    """What names a sweep's grid: `sweep` and `status` take the same."""
    parser.add_argument("notebook", type=Path)
    _fixed_argument(parser)
    parser.add_argument(
        "--seeds", default=None, help="comma-separated seeds, each combination of the grid executed once per seed"
    )
    parser.add_argument(
        "--grid", action="append", default=[], metavar="NAME=V1,V2,...", help="a parameter and its values"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where executed notebooks go (default: executed/ in the run root)"
    )


def _fixed(args: argparse.Namespace) -> dict:
    """The `-p NAME VALUE` parameters; a name given twice is refused (which value was meant?)."""
    names = [name for name, _ in args.p]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InputError(f"-p gives {', '.join(twice)} more than once; give each parameter one value.")
    return {name: parse_value(value) for name, value in args.p}


def _search_group(args: argparse.Namespace) -> tuple[dict, int]:
    """The parameters of a search's executions and the highest level it searches (`search` and `plan search`)."""
    fixed = _fixed(args)
    fixed.update(pretraining=args.pretraining, dataset=args.dataset, data_fraction=args.data_fraction)
    return fixed, args.levels or get_profile(fixed.get("quick", False)).levels


def _executions(args: argparse.Namespace) -> list[sweeps.Execution]:
    fixed = _fixed(args)
    grid = parse_grid(args.grid)
    if args.seeds is not None:  # each seed its own run beside the others: a grid over `seed`
        if "seed" in grid or "seed" in fixed:
            raise InputError("--seeds and a seed given with --grid or -p say the same thing twice; give one of them.")
        grid["seed"] = _seeds(args)
    return grid_executions(sweep_notebook(args.notebook), fixed, grid, args.out or sweep_dir(fixed))


def _sweep(args: argparse.Namespace) -> int:
    check_executor(args.executor)
    executions = _executions(args)
    todo = sweeps.to_submit(executions, force=args.force)
    print(
        f"{len(executions)} executions, {len(executions) - len(todo)} done, running or queued; submitting {len(todo)}",
        flush=True,
    )
    if args.executor == "local":
        finished = run_local(todo, parallel=args.jobs, per_gpu=args.per_gpu)
        return int(not all(finished.values()))
    jobs = sweeps.submit_slurm(todo, _slurm_options(args))
    if jobs:
        print(f"submitted job array {jobs[0].job_id.split('_')[0]}; follow it with the status command", flush=True)
    return 0


def _slurm_options(args: argparse.Namespace) -> sweeps.SlurmOptions:
    return sweeps.SlurmOptions(
        partition=args.partition,
        gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job,
        time_min=args.time,
        array_parallelism=args.array_parallelism,
        sbatch=dict(item.partition("=")[::2] for item in args.sbatch),
    )


def _search(args: argparse.Namespace) -> int:
    fixed, top = _search_group(args)
    seeds = _seeds(args)
    if args.status:
        sweeps.existing_run_root(fixed)
        _print_status(search.status_table(fixed, top_level=top, seeds=seeds, out=args.out or sweep_dir(fixed)))
        return 0
    check_executor(args.executor)
    runner = search.Runner(args.executor, args.jobs, args.per_gpu, _slurm_options(args))
    found = search.search(
        fixed, top_level=top, seeds=seeds, out=args.out or sweep_dir(fixed), runner=runner, confirm=args.confirm
    )
    print(found.summary(len(seeds)))
    return 0


def _status(args: argparse.Namespace) -> int:
    executions = _executions(args)
    sweeps.existing_run_root(_fixed(args))
    _print_status(sweeps.status_table(executions))
    return 0


def _print_status(table: pd.DataFrame) -> None:
    """A status table (`sweeps.status_table`), then how many executions are in each state and what they
    spent."""
    with pd.option_context("display.max_colwidth", None, "display.width", 200):
        print(table.to_string(index=False))
    counts = table.status.value_counts()
    said = ", ".join(f"{counts[s]} {s}" for s in sweeps.STATES if s in counts)
    print(
        f"{len(table)} executions: {said}; {table.wall_h.sum():.2f} h of wall time, {table.gpu_h.sum():.2f} GPU-hours"
    )


def _plan(args: argparse.Namespace) -> int:
    check_number("--gpus", args.gpus, 1, 1_000_000, integer=True)
    sweeps.check_per_gpu(args.per_gpu)
    pricer = costs.Pricer(sweeps.run_root_of(_fixed(args)), args.bench, args.prices)
    if args.what == "sweep":
        found = [plans.sweep_plan(_executions(args), pricer, args.per_gpu)]
    elif args.what == "search":
        fixed, top = _search_group(args)
        found = [
            plans.search_plan(
                fixed,
                top_level=top,
                seeds=_seeds(args),
                pricer=pricer,
                confirm=args.confirm,
                gpus=args.gpus,
                per_gpu=args.per_gpu,
            )
        ]
    else:
        fixed = _with_autoattack(_fixed(args), args.autoattack)
        found = list(plans.paper_plans(fixed, seeds=_seeds(args), pricer=pricer, gpus=args.gpus, per_gpu=args.per_gpu))
    for plan in found:
        print(plan.describe(args.gpus), end="\n\n")
    if len(found) == 2:
        every, searched = (p.gpu_hours() for p in found)
        print(f"The search costs at most {searched:,.2f} of the {every:,.2f} GPU-hours that every level costs.")
    print("\n".join(pricer.caveats()))
    return 0


def _with_autoattack(fixed: dict, asked: bool) -> dict:
    """`plan paper --autoattack`: the fixed parameters with the AutoAttack check of every adversarial run."""
    if not asked:
        return fixed
    if fixed.get("eval_attack", "autoattack") != "autoattack":
        raise InputError(
            f"--autoattack and -p eval_attack {fixed['eval_attack']} ask for different checks; give one of them."
        )
    return {**fixed, "eval_attack": "autoattack"}


def _seeds(args: argparse.Namespace) -> list[int]:
    seeds = [parse_value(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise InputError(f"--seeds lists integer seeds separated by commas, e.g. 1 or 1,2,3; got {args.seeds!r}.")
    return sweeps.once("--seeds", seeds)


def _search_arguments(parser: argparse.ArgumentParser) -> None:
    """What names one search: `search` and `plan search` take the same."""
    parser.add_argument("--pretraining", required=True, choices=list(PRETRAININGS))
    parser.add_argument("--dataset", required=True, help="the paper's data set: cifar10, cifar100 or svhn")
    parser.add_argument("--data-fraction", type=float, default=1.0, help="the data budget (1: all the data)")
    parser.add_argument("--levels", type=int, default=0, help="the highest level searched (0: the profile's ladder)")
    parser.add_argument("--confirm", action="store_true", help="also run the levels around the answer")
    _seeds_argument(parser)
    _fixed_argument(parser)


def _seeds_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", default="1", help="comma-separated seeds; each level is decided on their mean")


def _fixed_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a fixed notebook parameter (a Python literal or a string)",
    )


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gpus",
        type=int,
        default=1,
        help="GPUs the jobs share (one GPU per job; the IMP ladders of a search or the paper, when GPUs outnumber "
        "them, several under DDP)",
    )
    parser.add_argument(
        "--per-gpu",
        type=int,
        default=1,
        metavar="K",
        help="transfer runs sharing each GPU, slowed down as the bench's figures of K processes at once say",
    )
    parser.add_argument("--bench", type=Path, default=None, help="a `python -m dwlt_utils.bench --json` file")
    parser.add_argument(
        "--prices",
        choices=costs.PRICES,
        default="auto",
        help="auto: recorded runs of the run root, else the bench file; or only one of them",
    )


def _executor_arguments(parser: argparse.ArgumentParser) -> None:
    """Where executions run: `sweep` and `search` take the same."""
    parser.add_argument("--executor", choices=sweeps.EXECUTORS, default="local", help="this machine, or Slurm")
    parser.add_argument(
        "--jobs", type=int, default=1, help="local: executions at once (one GPU each, when there are GPUs)"
    )
    parser.add_argument(
        "--per-gpu",
        type=int,
        default=1,
        metavar="K",
        help="local: executions that may share one GPU, for small runs that leave it idle (32 px, data-limited); "
        "`bench --processes K` times it",
    )
    parser.add_argument("--partition", default=None, help="slurm: the partition")
    parser.add_argument("--gpus-per-job", type=int, default=1, help="slurm: GPUs of each execution's job")
    parser.add_argument("--cpus-per-job", type=int, default=8, help="slurm: CPU cores of each execution's job")
    parser.add_argument("--time", type=int, default=24 * 60, help="slurm: time limit of a job, in minutes")
    parser.add_argument("--array-parallelism", type=int, default=64, help="slurm: executions running at once")
    parser.add_argument(
        "--sbatch", action="append", default=[], metavar="KEY=VALUE", help="slurm: any other sbatch option"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dwlt_utils.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="run a notebook for every combination of --grid values")
    _grid_arguments(sweep)
    _executor_arguments(sweep)
    sweep.add_argument("--force", action="store_true", help="run every execution again, done ones included")
    status = sub.add_parser("status", help="the state of every execution of a sweep (same arguments as sweep)")
    _grid_arguments(status)
    find = sub.add_parser("search", help="bisect the IMP ladder for the highest double-win level of one group")
    _search_arguments(find)
    find.add_argument("--out", type=Path, default=None, help="where executed notebooks go")
    find.add_argument("--status", action="store_true", help="list the state of the search's executions; run nothing")
    _executor_arguments(find)
    plan = sub.add_parser("plan", help="GPU-hours and wall time of a sweep, a search or the whole paper on N GPUs")
    what = plan.add_subparsers(dest="what", required=True)
    plan_sweep = what.add_parser("sweep", help="a sweep (the arguments of sweep)")
    _grid_arguments(plan_sweep)
    plan_search = what.add_parser("search", help="a search (the arguments of search)")
    _search_arguments(plan_search)
    plan_paper = what.add_parser("paper", help="the whole paper, every level and by search")
    _seeds_argument(plan_paper)
    _fixed_argument(plan_paper)
    plan_paper.add_argument(
        "--autoattack",
        action="store_true",
        help="count the AutoAttack check of every adversarial run (what -p eval_attack autoattack asks for)",
    )
    for parser_ in (plan_sweep, plan_search, plan_paper):
        _plan_arguments(parser_)
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
    res = sub.add_parser("results", help="the committed results: the quick chain with three seeds, into results/quick/")
    res.add_argument("--run-root", type=Path, default=Path("runs/results-quick"))
    res.add_argument("--data-root", type=Path, default=Path("data"))
    res.add_argument("--out", type=Path, default=Path("rendered/results-quick"))
    res.add_argument("--results", type=Path, default=Path("results"))
    res.add_argument("--jobs", type=int, default=2)
    chk = sub.add_parser("check", help="fail when a notebook has outputs or no kernelspec")
    chk.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (DwltError, OSError) as err:  # what the user can fix: its sentence, never a traceback
        print(said(err), file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "status":
        return _status(args)
    if args.command == "search":
        return _search(args)
    if args.command == "plan":
        return _plan(args)
    if args.command == "render":
        for path in render(args.notebooks, args.out):
            print(path)
        return 0
    if args.command == "demo":
        return run_chain(DEMO, args.run_root, args.out, args.data_root, args.jobs, None)
    if args.command == "results":
        return run_chain(RESULTS, args.run_root, args.out, args.data_root, args.jobs, args.results)
    problems = [p for nb in args.notebooks for p in unclean(nb)]
    print("\n".join(problems) or f"{len(args.notebooks)} notebooks are clean")
    return int(bool(problems))


if __name__ == "__main__":
    sys.exit(main())
