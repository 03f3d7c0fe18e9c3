"""The GPU check's parts that run without a GPU: its refusal on a CPU machine, the tests' outcomes kept by a step
that is stopped, the report (JSON and Markdown, goals included), and the steps' time limits and incremental
writing."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from dwlt_utils import bench, gpu_check
from dwlt_utils.gpu_check import Check, Step


def figure(name, px, img_s, ratio, step, decoder=None, device="cuda", extra=None):
    return {
        **(extra or {}),
        "name": name,
        "px": px,
        "device": device,
        "batch": 128,
        "ours_img_s": img_s,
        "reference_img_s": img_s / ratio,
        "ratio": ratio,
        "ours": "cuda, bf16 autocast, channels_last" + (", CUDA graphs" if step == "bench_cuda_graphs" else ""),
        "gflop_per_img": None if decoder else 187.8,
        "tflop_s": None if decoder else 187.8 * img_s / 1e3,
        "peak_fraction": None if decoder else 187.8 * img_s / 1e3 / 790,
        "anchor_img_s": 1_029.0,
        "anchor_fraction": img_s / 1_029.0,
        "decoder": decoder,
        "step": step,
    }


ADV_PROFILE = {
    "device_busy": 0.83,
    "top_work": [
        {"name": "sm90_xmma_fprop_implicit_gemm_bf16", "share": 0.412, "ms_per_step": 80.1},
        {"name": "bn_fw_tr_1C11_kernel_NCHW", "share": 0.131, "ms_per_step": 25.5},
        {"name": "vectorized_elementwise_kernel", "share": 0.09, "ms_per_step": 17.5},
        {"name": "not among the three shown", "share": 0.05, "ms_per_step": 9.7},
    ],
}
MIXED_STAGES = {"worker_ms_per_img": 0.52, "workers_img_s": 28_846.2, "main_process_img_s": 6_100.0}


def step_named(name: str) -> Step:
    return next(step for step in gpu_check.STEPS if step.name == name)


@pytest.fixture()
def check(tmp_path):
    (tmp_path / "work").mkdir()
    return Check(tmp_path / "gpu", tmp_path / "work", "NVIDIA H200", 360, date="2026-12-01")


def test_without_cuda_the_check_says_so_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "gpu")]) == 2
    assert "needs a CUDA device; this machine has none" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


SAMPLE_TESTS = """
import time

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture()
def broken():
    raise ModuleNotFoundError("No module named 'dill'")


@pytest.fixture()
def untidy():
    yield
    raise RuntimeError("teardown broke")


def test_ok():
    pass


@pytest.mark.parametrize("px", [224])
def test_bad(px):
    assert 2.1 <= 1.0


def test_skip():
    pytest.skip("needs a CUDA device")


def test_setup(broken):
    pass


def test_teardown(untidy):
    pass


def test_hangs():
    time.sleep(120)


def test_never_started():
    pass
"""


def test_a_stopped_test_step_keeps_every_outcome_it_reached_and_names_the_test_it_stopped_in(check, tmp_path):
    folder = tmp_path / "sample"
    folder.mkdir()
    (folder / "test_sample.py").write_text(SAMPLE_TESTS)
    step = Step(
        "tests", "sample tests", 1, lambda c, s: gpu_check._pytest(c, s, "gpu", str(folder)), gpu_check._read_tests
    )
    gpu_check.run_steps([step], check, budget=15)
    report = json.loads(check.json_path.read_text())
    assert report["steps"]["tests"]["status"] == "timed out"
    tests = {name.split("::", 1)[1]: test for name, test in report["tests"].items()}
    assert {name: test["outcome"] for name, test in tests.items()} == {
        "test_ok": "passed",
        "test_bad[224]": "failed",
        "test_skip": "skipped",
        "test_setup": "failed",
        "test_teardown": "failed",
        "test_hangs": "stopped",
    }
    assert tests["test_bad[224]"]["message"] == "assert 2.1 <= 1.0"
    assert tests["test_skip"]["message"] == "needs a CUDA device"
    assert tests["test_setup"]["message"] == "ModuleNotFoundError: No module named 'dill'"
    assert tests["test_teardown"]["message"] == "RuntimeError: teardown broke"
    assert tests["test_hangs"] == {
        "outcome": "stopped",
        "seconds": None,
        "message": "it was running when its step ended",
    }
    assert all(test["seconds"] >= 0 for name, test in tests.items() if name != "test_hangs")
    md = check.md_path.read_text()
    (bad,) = [line for line in md.splitlines() if line.startswith("| test_sample.py::test_bad[224] | failed |")]
    assert bad.endswith("| assert 2.1 <= 1.0 |")
    assert "| test_sample.py::test_hangs | stopped | - | it was running when its step ended |" in md


def test_the_report_holds_figures_goals_tests_and_why_a_check_failed(check):
    environment = {
        "gpu_count": 1,
        "gpus": [{"name": "NVIDIA H200", "memory_gib": 139.8}],
        "nvidia_smi": None,
        "torch": "2.11.0",
        "cuda": "13.0",
        "torchvision": "0.26.0",
        "cudnn": 91900,
        "python": "3.12.3",
        "cpu_count": 16,
        "optional_packages": {"papermill": False, "dill": True, "torchattacks": True},
    }
    environment_step = step_named("environment")
    environment_step.file(check, ".json").write_text(json.dumps(environment))
    assert gpu_check._read_environment(check, environment_step) is None
    check.report["figures"] = [
        figure("adv_train", 224, 700.0, 4.6, "bench", extra=ADV_PROFILE),
        figure("adv_train", 224, 850.0, 4.4, "bench_cuda_graphs"),
        figure("clean_train", 224, 5_000.0, 2.0, "bench"),
        figure("imagenet_input", 224, 6_000.0, 9.0, "bench_input", decoder="mixed", extra=MIXED_STAGES),
        figure("imagenet_input", 224, 3_000.0, 4.5, "bench_input", decoder="turbo"),
    ]
    check.report["tests"] = {
        "tests/gpu/test_gpu.py::test_bad[224]": {
            "outcome": "failed",
            "seconds": 0.5,
            "message": "AssertionError: assert 2.1 <= 1.0",
        }
    }
    check.record("bench", {"what": "bench", "status": "passed", "reason": None, "seconds": 90.0})
    check.record(
        "nccl", {"what": "DDP under NCCL", "status": "failed", "reason": "exited with status 1: NCCL error: unhandled"}
    )
    report = json.loads((check.json_path.parent / "nvidia-h200-2026-12-01.json").read_text())
    assert report["passed"] is False and report["steps"]["nccl"]["status"] == "failed"
    verdicts = {g["goal"]: g for g in report["goals"]}
    assert verdicts["PGD-10 training, 224 px, batch 128"]["verdict"] == "met"  # by the CUDA graphs figure
    assert verdicts["PGD-10 training, 224 px, batch 128"]["value"] == 850.0
    assert verdicts["PGD-10 training, 224 px, against the reference"]["value"] == 4.6
    assert verdicts["clean training, 224 px"]["verdict"] == "not met"
    assert verdicts["ImageNet JPEG input"]["verdict"] == "not met"
    assert verdicts["ImageNet JPEG input against clean training, 224 px"]["verdict"] == "met"
    assert verdicts["ImageNet JPEG input against clean training, 224 px"]["at_least"] == 5_000.0
    assert verdicts["PGD-20 evaluation, 32 px"]["verdict"] == "not measured"
    assert set(verdicts) == set(gpu_check.GOALS)
    md = (check.json_path.parent / "nvidia-h200-2026-12-01.md").read_text()
    assert md.startswith("# GPU check: NVIDIA H200, 2026-12-01")
    assert "| nccl | failed | - | DDP under NCCL | exited with status 1: NCCL error: unhandled |" in md
    assert "papermill is not installed: the CUDA rehearsal" in md
    assert "| bench_cuda_graphs | adv_train | 224 | 128 | 850.0 | 193.2 | 4.40x | 187.80 | 159.6 | 20.2 |" in md
    assert "| imagenet_input (mixed) | 224 | 128 | 6,000.0 |" in md
    assert "| bench_input | mixed | 6,000.0 | 0.52 | 28,846 | 6,100 |" in md  # the stages of the one that has them
    profiled = (
        "| bench | adv_train | 224 | 83.0 | sm90_xmma_fprop_implicit_gemm_bf16 41%; bn_fw_tr_1C11_kernel_NCHW 13%; "
    )
    assert profiled + "vectorized_elementwise_kernel 9% |  |" in md
    assert "| PGD-10 training, 224 px, batch 128 | ours_img_s | 800.0 | 850.0 | met |" in md
    assert "| clean training, 224 px | ours_img_s | 5,500.0 | 5,000.0 | not met |" in md
    assert "| tests/gpu/test_gpu.py::test_bad[224] | failed | 0.5 | AssertionError: assert 2.1 <= 1.0 |" in md


def _python(code: str):
    return lambda check, step: [sys.executable, "-c", code]


def test_the_report_is_rewritten_after_each_step_so_a_failing_one_leaves_the_earlier(check):
    def unreadable(check, step):
        raise RuntimeError("the check's own reading failed")

    steps = [
        Step("first", "prints", 1, _python("print('hello')")),
        Step("absent", "not here", 1, _python("pass"), skip=lambda check: "nothing to run it with"),
        Step("second", "leaves an unreadable file", 1, _python("pass"), read=unreadable),
    ]
    with pytest.raises(RuntimeError):
        gpu_check.run_steps(steps, check, budget=120)
    report = json.loads(check.json_path.read_text())
    assert list(report["steps"]) == ["first", "absent"]
    assert report["steps"]["first"]["status"] == "passed" and report["steps"]["first"]["output_tail"] == "hello\n"
    assert report["steps"]["absent"] == {"what": "not here", "status": "not run", "reason": "nothing to run it with"}
    assert report["passed"] is True
    assert sorted(p.name for p in check.json_path.parent.iterdir()) == [check.json_path.name, check.md_path.name]


def test_a_step_past_its_limit_is_stopped_with_every_process_it_started(check):
    pid_file = check.work / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    failing = Step("exits", "fails", 1, _python("print('one'); print('it broke'); raise SystemExit(3)"))
    steps = [failing, Step("slow", "sleeps", 1, _python(code))]
    gpu_check.run_steps(steps, check, budget=gpu_check.LEAST_TIMEOUT_S * 2 + 2)
    report = json.loads(check.json_path.read_text())
    assert report["steps"]["exits"]["status"] == "failed"
    assert report["steps"]["exits"]["reason"] == "exited with status 3: it broke"
    assert report["steps"]["slow"]["status"] == "timed out" and report["passed"] is False
    assert not running(int(pid_file.read_text()))


def running(pid: int) -> bool:
    """Whether a process runs: not ended, nor a zombie waiting for a parent that reaps no one (a container's)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_each_step_gets_its_share_of_the_budget_left():
    assert gpu_check.timeout_for(38, 100, 360) == pytest.approx(136.8)
    assert gpu_check.timeout_for(10, 10, 50) == 50  # the last step gets all that is left
    assert gpu_check.timeout_for(5, 10, -3) == 0
    shares = [step.share for step in gpu_check.STEPS]
    assert sum(shares) == 148 and all(share > 0 for share in shares)


def test_every_module_a_step_runs_takes_the_steps_arguments(check):
    """A misspelt option would cost a lent GPU's minutes: each step's command is parsed here as its module would."""
    parsers = {"dwlt_utils.bench": bench._parser(), "dwlt_utils.gpu_check": gpu_check._parser()}
    parsed = []
    for step in gpu_check.STEPS:
        if step.name == "nccl":  # torchrun's command counts the GPUs present
            continue
        command = step.command(check, step)
        if command[1] == "-m" and command[2] in parsers:
            parsers[command[2]].parse_args(command[3:])
            parsed.append(step.name)
    assert parsed == ["environment", "bench", "bench_input", "bench_cuda_graphs", "bench_shared", "bench_compile"]
    shared = bench._parser().parse_args(step_named("bench_shared").command(check, step_named("bench_shared"))[3:])
    assert shared.processes == gpu_check.SHARED_PROCESSES and shared.px == [32]


def test_the_environment_names_the_optional_packages(tmp_path):
    out = tmp_path / "environment.json"
    assert gpu_check.main(["--environment", str(out)]) == 0
    found = json.loads(out.read_text())
    assert set(found["optional_packages"]) == set(gpu_check.OPTIONAL_PACKAGES)
    assert found["torch"] == torch.__version__ and found["cpu_count"] == os.cpu_count()
