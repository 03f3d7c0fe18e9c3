"""Sweeps on real submitit: quick-profile executions as local jobs, a Slurm job array through stand-in `sbatch`
and `srun` commands, the state of every execution, and a sweep killed in the middle and run again."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dwlt_utils import cli, jobs, results, search, sweeps
from dwlt_utils.errors import InputError

NOTEBOOK = cli.NOTEBOOKS / "03_std_transfer.ipynb"


def test_values_are_read_as_papermill_reads_them():
    assert sweeps.parse_value("0.9141") == 0.9141
    assert sweeps.parse_value("True") is True
    assert sweeps.parse_value("['std', 'adv']") == ["std", "adv"]
    assert sweeps.parse_value("adv") == "adv"
    assert sweeps.parse_value("8/255") == "8/255"  # not evaluated: the notebook rejects it with a sentence


def test_a_grid_gives_one_named_execution_per_combination(tmp_path):
    grid = {"pretraining": ["standard", "adv"], "sparsity": [0.36, 0.9141]}
    executions = sweeps.grid_executions(cli.NOTEBOOKS / "04_adv_transfer.ipynb", {"quick": True}, grid, tmp_path)
    assert len(executions) == 4
    assert executions[-1].parameters == {"quick": True, "pretraining": "adv", "sparsity": 0.9141}
    assert executions[-1].output == tmp_path / "04_adv_transfer" / "pretraining-adv_sparsity-0.9141.ipynb"
    assert executions[-1].state_file == tmp_path / "04_adv_transfer" / "pretraining-adv_sparsity-0.9141.json"
    assert len({execution.output for execution in executions}) == 4
    with pytest.raises(InputError, match=r"^04_adv_transfer.ipynb has no parameter sparsty; it takes quick, seed,"):
        sweeps.grid_executions(cli.NOTEBOOKS / "04_adv_transfer.ipynb", {}, {"sparsty": [0.36]}, tmp_path)
    with pytest.raises(InputError, match="--grid takes NAME=V1,V2"):
        sweeps.parse_grid(["sparsity"])


def test_seeds_are_a_grid_over_the_seed_given_once(roots, capsys):
    roots.run_root.mkdir(parents=True)
    arguments = sweep_arguments(roots, seeds=(1, 2))
    assert status_lines(arguments, capsys) == {
        "seed-1": "missing",
        "seed-2": "missing",
        "summary": "2 executions: 2 missing; 0.00 h of wall time, 0.00 GPU-hours",
    }
    assert cli.main(["status", *arguments, "--grid", "seed=3"]) == 2
    assert "--seeds and a seed given with --grid or -p say the same thing twice" in capsys.readouterr().err
    assert cli.main(["status", *sweep_arguments(roots), "--seeds", "1,two"]) == 2
    assert "--seeds lists integer seeds" in capsys.readouterr().err


def status_said(arguments: list[str], capsys) -> tuple[int, list[str], str]:
    """A status command's exit status, its table's first column, and what it said on stderr."""
    capsys.readouterr()
    code = cli.main(["status", *arguments])
    out, err = capsys.readouterr()
    return code, [line.split()[0] for line in out.splitlines()[1:-1]], err


def test_a_parameter_given_twice_is_refused_and_a_value_listed_twice_counts_once(roots, capsys):
    roots.run_root.mkdir(parents=True)
    with pytest.raises(InputError, match=r"^--grid gives sparsity twice; give all its values at once"):
        sweeps.parse_grid(["sparsity=0.36", "sparsity=0.488"])
    said = []
    assert sweeps.parse_grid(["sparsity=0.36,0.488,0.360,0.36"], say=said.append) == {"sparsity": [0.36, 0.488]}
    assert said == ["--grid sparsity lists 0.36 more than once; each value counts once."]
    # through the command: each execution listed, and its hours counted, once
    code, names, err = status_said(sweep_arguments(roots, sparsities=(0.36, 0.488, 0.36)), capsys)
    assert (code, names) == (0, ["sparsity-0.36", "sparsity-0.488"]) and "lists 0.36 more than once" in err
    code, names, err = status_said(sweep_arguments(roots, seeds=(2, 1, 2)), capsys)
    assert (code, names) == (0, ["seed-2", "seed-1"]) and "--seeds lists 2 more than once" in err
    code, names, err = status_said([*sweep_arguments(roots), "-p", "epochs", "2"], capsys)
    assert code == 2 and err == "InputError: -p gives epochs more than once; give each parameter one value.\n"
    code, names, err = status_said([*sweep_arguments(roots), "-p", "sparsity", "0.36"], capsys)
    assert code == 2 and "sparsity is given both fixed (-p) and as a grid (--grid); give it once." in err


def test_status_says_when_its_run_root_does_not_exist(roots, capsys):
    for command in (["status", *sweep_arguments(roots)], [*search_arguments(roots), "--status"]):
        assert cli.main(command) == 2
        assert capsys.readouterr().err == (
            f"MissingInputError: The run root {roots.run_root} does not exist, so none of these executions ran there: "
            "check -p run_root.\n"
        )


def search_arguments(roots) -> list[str]:
    """A quick-profile search of levels 1-3 with seed 1."""
    where = ["-p", "quick", "True", "-p", "run_root", str(roots.run_root), "-p", "data_root", str(roots.data_root)]
    return ["search", "--pretraining", "adv", "--dataset", "cifar10", "--levels", "3", "--seeds", "1", *where]


def test_a_search_shows_its_executions_a_killed_one_failed_with_its_log(roots, capsys):
    fixed = {"quick": True, "run_root": str(roots.run_root), "data_root": str(roots.data_root)}
    fixed |= {"pretraining": "adv", "dataset": "cifar10", "data_fraction": 1.0}
    dense, level_2 = (search.level_executions(fixed, level, [1], roots.run_root / "executed")[0] for level in (0, 2))
    killed = subprocess.Popen(["sleep", "60"])
    jobs.write_state(dense, "started", pid=killed.pid, host=socket.gethostname(), log="/logs/dense.out")
    killed.kill()
    killed.wait()
    jobs.write_state(level_2, "failed", error="MissingInputError: no ticket.", log="/logs/level2.out")
    assert cli.main([*search_arguments(roots), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert list(rows) == ["level-0_seed-1", "level-2_seed-1"]  # levels 1 and 3: nothing of them yet
    assert rows["level-0_seed-1"].split()[1] == "failed"
    assert rows["level-0_seed-1"].endswith(
        "its job ended without finishing it (killed, or out of time) Log: /logs/dense.out"
    )
    assert rows["level-2_seed-1"].split()[1] == "failed"
    assert rows["level-2_seed-1"].endswith("MissingInputError: no ticket. Log: /logs/level2.out")
    assert lines[-1].startswith("2 executions: 2 failed;")


def test_a_sweep_with_executions_its_notebook_refuses_submits_none_of_them(roots, stand_in_slurm, capsys):
    arguments = [*sweep_arguments(roots, sparsities=(0.36, 1.5, 0.5)), "--grid", "pretraining=adv,robust"]
    for force in ([], ["--force"]):
        assert cli.main(["sweep", *arguments, "--executor", "slurm", *force]) == 2
        err = capsys.readouterr().err
        assert err.startswith("InputError: 5 of the 6 executions have parameters their notebook refuses, so nothing ")
        assert (
            "sparsity-1.5_pretraining-adv (A sparsity is a fraction in [0, 1), e.g. 0.9141 for 91.41%; got 1.5)" in err
        )
        assert "sparsity-0.5_pretraining-adv (sparsity 0.5 is not on the IMP ladder" in err
        assert "sparsity-0.36_pretraining-robust (unknown pre-training 'robust'" in err
        assert "sparsity-0.36_pretraining-adv " not in err
        assert not stand_in_slurm.exists() and not (roots.run_root / "executed").exists()  # nothing submitted


def test_a_sweep_keeps_its_executed_notebooks_in_its_run_root(tmp_path, monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert sweeps.sweep_dir({"quick": True}) == tmp_path / "runs" / "executed"
    assert sweeps.sweep_dir({"run_root": "/scratch/r"}) == Path("/scratch/r/executed")
    monkeypatch.chdir(cli.REPO / "notebooks")  # as a notebook run from there resolves it
    assert sweeps.sweep_dir({"run_root": "elsewhere"}) == cli.REPO / "elsewhere" / "executed"


def sweep_arguments(roots, *, sparsities=(0.36, 0.488), seeds=None) -> list[str]:
    """A quick-profile sweep of one-epoch standard-transfer executions: one-shot tickets at `sparsities` (they need
    only the source), or dense models at `seeds`."""
    ticket = ["-p", "ticket", "omp", "--grid", "sparsity=" + ",".join(map(str, sparsities))]
    if seeds:
        ticket = ["-p", "ticket", "dense", "-p", "sparsity", "0", "--seeds", ",".join(map(str, seeds))]
    return [
        str(NOTEBOOK),
        *("-p", "quick", "True", "-p", "run_root", str(roots.run_root), "-p", "data_root", str(roots.data_root)),
        *("-p", "epochs", "1", *ticket),
    ]


def status_lines(arguments: list[str], capsys) -> dict[str, str]:
    capsys.readouterr()
    assert cli.main(["status", *arguments]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {line.split()[0]: line.split()[1] for line in lines[1:-1]} | {"summary": lines[-1]}


def test_a_local_sweep_runs_each_execution_as_a_job_and_a_second_run_submits_nothing(roots, plant_source, capsys):
    plant_source()
    arguments = sweep_arguments(roots)
    assert status_lines(arguments, capsys) == {
        "sparsity-0.36": "missing",
        "sparsity-0.488": "missing",
        "summary": "2 executions: 2 missing; 0.00 h of wall time, 0.00 GPU-hours",
    }
    assert cli.main(["sweep", *arguments, "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 executions, 0 done, running or queued; submitting 2" in out and out.count("ok 03_std_transfer") == 2
    records = results.load(roots.run_root)
    assert sorted(records.ticket) == ["dense", "omp", "omp"]  # the shared dense baseline trained once
    folder = roots.run_root / "executed" / "03_std_transfer"
    for name in ("sparsity-0.36", "sparsity-0.488"):
        assert (folder / f"{name}.ipynb").is_file()
        state = json.loads((folder / f"{name}.json").read_text())
        assert state["state"] == "finished" and state["executor"] == "local" and Path(state["log"]).is_file()
    lines = status_lines(arguments, capsys)
    assert lines["sparsity-0.36"] == lines["sparsity-0.488"] == "done"
    assert lines["summary"].startswith("2 executions: 2 done;")
    assert cli.main(["sweep", *arguments]) == 0
    assert "submitting 0" in capsys.readouterr().out
    assert len(results.load(roots.run_root)) == 3
    # the plan of the same sweep: both executions done, priced from their own records, nothing left to run
    assert cli.main(["plan", "sweep", *arguments, "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"std transfer cifar10 +1\.000 +16 +2 +2 .* 3 recorded runs \(cpu, fp32\)", out), out
    assert "Total: 0.00 GPU-hours still to run, 0.0 min of wall time on 2 GPUs" in out


def test_a_failing_execution_is_failed_with_its_sentence_and_log(roots, monkeypatch, capsys):
    monkeypatch.setattr(sweeps, "_gpu_count", lambda: 1)  # a GPU that only submitit's environment names
    arguments = sweep_arguments(roots, sparsities=(0.36,))  # no source planted: the notebook stops
    assert cli.main(["sweep", *arguments, "--jobs", "2", "--per-gpu", "2"]) == 1
    # an execution that may share its GPU counts its share of it
    assert (
        json.loads((roots.run_root / "executed" / "03_std_transfer" / "sparsity-0.36.json").read_text())["gpus"] == 0.5
    )
    capsys.readouterr()
    assert cli.main(["status", *arguments]) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert "failed" in row and "MissingInputError: The dense adv_linf4 source is not in" in row
    assert "Log: " in row and ".out" in row


def test_executions_share_a_gpu_only_once_every_gpu_has_one():
    assert sweeps.gpu_slots(3, 0, 4) == [None, None, None]
    assert sweeps.gpu_slots(3, 2) == [0, 1]  # one per GPU: no more at once than GPUs
    assert sweeps.gpu_slots(3, 2, 2) == [0, 1, 0]
    assert sweeps.gpu_slots(8, 2, 2) == [0, 1, 0, 1]


def test_sharing_gpus_on_a_machine_without_one_is_said_to_change_nothing(monkeypatch, capsys):
    monkeypatch.setattr(sweeps, "_gpu_count", lambda: 0)
    assert sweeps.run_local([], per_gpu=2) == {}
    assert "--per-gpu 2 changes nothing on a machine without GPUs." in capsys.readouterr().err


@pytest.mark.slow  # 35 s: the unit suite's longest
def test_a_killed_sweep_run_again_runs_only_its_unfinished_executions(roots, plant_source, capsys):
    plant_source()
    arguments = sweep_arguments(roots, seeds=(1, 2))  # a dense model each: one training per execution
    folder = roots.run_root / "executed" / "03_std_transfer"
    sweep = subprocess.Popen([sys.executable, "-m", "dwlt_utils.cli", "sweep", *arguments], start_new_session=True)

    def state(name: str) -> dict:
        try:
            return json.loads((folder / f"{name}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    deadline = time.monotonic() + 300
    while not (state("seed-1").get("state") == "finished" and state("seed-2").get("state") == "started"):
        assert time.monotonic() < deadline and sweep.poll() is None, "the sweep never reached its second execution"
        time.sleep(0.2)
    time.sleep(2)  # into the second execution's notebook
    os.killpg(sweep.pid, signal.SIGKILL)  # the sweep itself
    os.kill(state("seed-2")["pid"], signal.SIGKILL)  # and the job running the second execution
    sweep.wait()
    time.sleep(3)  # the orphaned notebook kernel notices its parent is gone and ends
    before = status_lines(arguments, capsys)
    assert (before["seed-1"], before["seed-2"]) == ("done", "failed")
    first = results.load(roots.run_root)
    assert cli.main(["sweep", *arguments]) == 0
    assert "2 executions, 1 done, running or queued; submitting 1" in capsys.readouterr().out
    records = results.load(roots.run_root)
    assert sorted(records.seed) == [1, 2]  # every run recorded once
    kept = records[records.run_id.isin(first.run_id)]
    assert kept.timestamp.tolist() == first.timestamp.tolist()  # what had finished was not run again


# ---- Slurm, as far as it goes without a cluster

STAND_IN_SBATCH = """\
#!{python}
# Stands in for Slurm's sbatch: keeps the script, answers with a job id and, when DWLT_RUN_SBATCH is set, runs
# the script in the background (after submitit has put the job's pickle in place) as Slurm would.
import os, re, shutil, subprocess, sys, time
script = sys.argv[-1]
shutil.copy(script, os.environ["DWLT_SBATCH_COPY"])
print("Submitted batch job 4242", flush=True)
if os.environ.get("DWLT_RUN_SBATCH"):
    array = re.search(r"#SBATCH --array=0-(\\d+)", open(script).read())
    env = dict(os.environ, SLURM_JOB_ID="4242", SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0",
               SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_JOB_NODELIST="localhost")
    tasks = [dict(env, SLURM_ARRAY_JOB_ID="4242", SLURM_ARRAY_TASK_ID=str(i)) for i in range(int(array[1]) + 1)] \\
        if array else [env]
    runner = "import subprocess, sys, time, json; time.sleep(2); " \\
        "[subprocess.run(['bash', sys.argv[1]], env=e) for e in json.loads(sys.argv[2])]"
    import json
    subprocess.Popen([sys.executable, "-c", runner, script, json.dumps(tasks)], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"""
STAND_IN_SRUN = """\
#!{python}
# Stands in for srun inside a job: takes --output/--error, fills in Slurm's file-name patterns, runs the command.
import os, subprocess, sys
args, files = sys.argv[1:], {{}}
while args[0].startswith("--"):
    flag = args.pop(0)
    if flag in ("--output", "--error"):
        files[flag] = args.pop(0)
def fill(path):
    for key, var in (("%A", "SLURM_ARRAY_JOB_ID"), ("%a", "SLURM_ARRAY_TASK_ID"), ("%j", "SLURM_JOB_ID")):
        path = path.replace(key, os.environ.get(var, ""))
    return path.replace("%t", "0")
out = open(fill(files["--output"]), "a")
err = open(fill(files["--error"]), "a")
sys.exit(subprocess.run(args, stdout=out, stderr=err).returncode)
"""


@pytest.fixture
def stand_in_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", STAND_IN_SBATCH), ("srun", STAND_IN_SRUN)):
        (bin_dir / name).write_text(text.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DWLT_SBATCH_COPY", str(tmp_path / "submitted.sh"))
    return tmp_path / "submitted.sh"


def test_a_slurm_sweep_is_one_job_array_with_the_asked_resources_and_requeue(roots, stand_in_slurm, capsys):
    arguments = sweep_arguments(roots, sparsities=(0.36, 0.488, 0.5904))
    slurm = ["--executor", "slurm", "--partition", "gpu", "--gpus-per-job", "1", "--cpus-per-job", "4"]
    slurm += ["--time", "90", "--array-parallelism", "2", "--sbatch", "account=mylab"]
    assert cli.main(["sweep", *arguments, *slurm]) == 0
    assert "submitted job array 4242" in capsys.readouterr().out
    script = stand_in_slurm.read_text()
    for line in (
        "#SBATCH --array=0-2%2",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --time=90",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=mylab",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@90",  # submitit's warning before the time limit: it checkpoints and requeues
    ):
        assert line in script.splitlines(), line
    lines = status_lines(arguments, capsys)
    assert [lines[f"sparsity-{s}"] for s in ("0.36", "0.488", "0.5904")] == ["queued"] * 3


def test_one_execution_runs_through_a_slurm_job_script(roots, plant_source, stand_in_slurm, monkeypatch, capsys):
    plant_source()
    monkeypatch.setenv("DWLT_RUN_SBATCH", "1")
    arguments = sweep_arguments(roots, sparsities=(0.36,))
    assert cli.main(["sweep", *arguments, "--executor", "slurm", "--gpus-per-job", "0"]) == 0
    state_file = roots.run_root / "executed" / "03_std_transfer" / "sparsity-0.36.json"
    deadline = time.monotonic() + 240
    while json.loads(state_file.read_text())["state"] not in ("finished", "failed"):
        assert time.monotonic() < deadline, textwrap.shorten(state_file.read_text(), 300)
        time.sleep(0.5)
    state = json.loads(state_file.read_text())
    assert state["state"] == "finished" and state["job_id"] == "4242", state
    assert sorted(results.load(roots.run_root).ticket) == ["dense", "omp"]
    assert status_lines(arguments, capsys)["sparsity-0.36"] == "done"
