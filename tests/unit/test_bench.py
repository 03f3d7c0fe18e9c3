"""The benchmark on a CPU: every field of a figure, the file kept whole after each figure, FLOPs per image as
torch counts them for the bare loop, the MLPerf anchor, the ImageNet input path through every decoder."""

import json
import queue
from dataclasses import asdict

import pytest
import torch
from PIL import Image, JpegImagePlugin

from dwlt_utils import bench
from dwlt_utils.engine import Precision

CPU = Precision.for_device("cpu")
# FLOPs per 224 px image counted by torch for the bare loop of ../shared/gpu/2026-11-30/limit.py
BARE_LOOP_GFLOP = {"clean_train": 24.3, "adv_train": 187.8, "pgd20_eval": 335.2}


def test_bench_reports_every_field_of_a_figure(tmp_path):
    out = tmp_path / "bench.json"
    arguments = ["--device", "cpu", "--quick", "--px", "32", "--figures", "clean_train", "--batch", "2"]
    assert bench.main([*arguments, "--json", str(out)]) == 0
    (figure,) = json.loads(out.read_text())
    assert set(asdict(bench.Figure("n", 32, "cpu", 2, 1.0, 1.0, 1.0, "a", 1, "o", "r"))) <= set(figure)
    assert {"torch_version", "device_name", "peak_tflop_s"} <= set(figure)
    assert figure["name"] == "clean_train" and figure["px"] == 32 and figure["device"] == "cpu"
    assert figure["ours_img_s"] > 0 and figure["reference_img_s"] > 0
    assert figure["ratio"] == pytest.approx(figure["ours_img_s"] / figure["reference_img_s"], rel=1e-2)
    assert figure["gflop_per_img"] > 0
    assert figure["tflop_s"] == pytest.approx(figure["gflop_per_img"] * figure["ours_img_s"] / 1e3, rel=1e-2)
    # no peak is claimed on a CPU, and 32 px has no anchor
    assert figure["peak_tflop_s"] is None and figure["peak_fraction"] is None
    assert figure["anchor_img_s"] is None and figure["anchor_fraction"] is None and figure["decoder"] is None


def test_a_profiled_figure_names_its_costliest_work(tmp_path, capsys):
    out = tmp_path / "bench.json"
    arguments = ["--device", "cpu", "--quick", "--px", "32", "--figures", "clean_train", "--batch", "2", "--profile"]
    assert bench.main([*arguments, "--json", str(out)]) == 0
    (figure,) = json.loads(out.read_text())
    top = figure["top_work"]
    assert 0 < len(top) <= bench.TOP_WORK and figure["profile_note"] is None
    assert sum(work["share"] for work in top) <= 1.0001 and all(work["ms_per_step"] > 0 for work in top)
    assert top == sorted(top, key=lambda work: -work["share"])
    # a CPU's operators: its convolutions take the most; no busy share is claimed without a device
    assert "convolution" in top[0]["name"] and figure["device_busy"] is None
    assert f"costliest: {top[0]['name']}" in capsys.readouterr().out
    assert bench.main(["--device", "cpu", "--profile", "--processes", "2"]) == 2
    assert "--profile profiles one process's figures" in capsys.readouterr().err


def test_a_stopped_bench_leaves_every_figure_it_finished(tmp_path, monkeypatch):
    finished = bench.Figure("adv_train", 32, "cpu", 2, 10.0, 5.0, 2.0, "resnet50_32px", 2, "ours", "reference")
    figures = iter([finished])

    def compare(*args, **kwargs):
        figure = next(figures, None)
        if figure is None:
            raise KeyboardInterrupt  # what a time limit does to the run
        return figure

    monkeypatch.setattr(bench, "compare", compare)
    monkeypatch.setattr(bench, "gflop_per_image", lambda *args: 1.0)
    out = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--device", "cpu", "--px", "32", "--figures", "adv_train", "clean_train", "--json", str(out)])
    (written,) = json.loads(out.read_text())
    assert written["name"] == "adv_train" and written["gflop_per_img"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # no temporary file left behind


def test_processes_timing_at_once_add_their_images_over_the_slowest_rounds(monkeypatch):
    sizes = dict(batch=2, steps=1, rounds=2, warmup=0)
    # two figures (the cheapest one twice, with other sizes) from one start of two processes
    timings = [("clean_train", 32, sizes), ("clean_train", 32, {**sizes, "steps": 2})]
    figures = list(bench.compare_shared(timings, CPU, processes=2, workers=0))
    assert [(f.name, f.processes, f.steps_timed) for f in figures] == [("clean_train", 2, 4), ("clean_train", 2, 8)]
    for figure in figures:
        assert figure.ours.endswith(", 2 processes at once") and figure.ours_img_s > 0
        assert figure.ratio == pytest.approx(figure.ours_img_s / figure.reference_img_s, 1e-2)
    # the arithmetic, on made-up rounds: round by round, every process's images over the slowest's seconds
    rounds = [{"ours": [(1.0, 4), (2.0, 4)], "reference": [(4.0, 4), (4.0, 4)]}] + [
        {"ours": [(3.0, 4), (1.0, 4)], "reference": [(2.0, 4), (8.0, 4)]}
    ]
    assert bench.shared_rates(rounds) == {"ours": 16 / (3 + 2), "reference": 16 / (4 + 8)}
    # a process that fails stops the others and the figure, in one sentence
    with pytest.raises(bench.DwltError, match=r"bench --processes 2: a process failed \(KeyError: 64\)"):
        list(bench.compare_shared([("clean_train", 64, sizes)], CPU, processes=2, workers=0))


def test_a_process_that_dies_without_a_word_is_a_failure_said_so(monkeypatch):
    monkeypatch.setattr(bench, "POLL_S", 0.01)

    class Dead:
        exitcode = -9

        def is_alive(self):
            return False

    answers = queue.Queue()
    answers.put((1, 0, "rounds of the second process"))
    answered = [0, 0]
    assert bench._answer(answers, [Dead(), Dead()], answered, 2) == (0, "rounds of the second process")
    # the first has answered nothing, the second once: the first one's silence is its first figure's failure
    assert bench._answer(answers, [Dead(), Dead()], answered, 2) == (0, "it ended with exit code -9 and no answer")


def test_flops_per_image_are_what_torch_counts_for_the_bare_loop():
    assert bench.gflop_per_image("clean_train", 224, CPU) == pytest.approx(BARE_LOOP_GFLOP["clean_train"], rel=5e-3)
    # At 32 px an attacked step costs about as many clean steps as at 224 px: the same network on smaller maps,
    # but for its first convolution (3×3 instead of 7×7 with stride 2), which moves the ratios by a percent or two.
    clean = bench.gflop_per_image("clean_train", 32, CPU)
    for name in ("adv_train", "pgd20_eval"):
        expected = BARE_LOOP_GFLOP[name] / BARE_LOOP_GFLOP["clean_train"]
        assert bench.gflop_per_image(name, 32, CPU) / clean == pytest.approx(expected, rel=3e-2), name


def test_the_anchor_is_mlperfs_clean_rate_scaled_by_flops():
    clean = BARE_LOOP_GFLOP["clean_train"]
    assert bench.anchor_img_s("clean_train", 224, clean, clean) == 7_950
    assert bench.anchor_img_s("adv_train", 224, BARE_LOOP_GFLOP["adv_train"], clean) == pytest.approx(1_029, abs=1)
    assert bench.anchor_img_s("pgd20_eval", 224, BARE_LOOP_GFLOP["pgd20_eval"], clean) == pytest.approx(576, abs=1)
    assert bench.anchor_img_s("imagenet_input", 224, None, None) == 7_950  # the rate the input has to feed
    assert bench.anchor_img_s("adv_train", 32, 60.0, 7.8) is None


def test_shares_of_the_peak_and_the_anchor_are_a_gpus_only():
    figure = bench.Figure("adv_train", 224, "cuda", 128, 800.0, 200.0, 4.0, "resnet50", 12, "ours", "reference")
    on_gpu = bench.rated(figure, 187.8, 790.0, 1_029.0)
    assert on_gpu.tflop_s == pytest.approx(150.24) and on_gpu.reference_tflop_s == pytest.approx(37.56)
    assert on_gpu.peak_fraction == pytest.approx(150.24 / 790, abs=1e-4)
    assert on_gpu.anchor_fraction == pytest.approx(800 / 1_029, abs=1e-4) and "MLPerf" in on_gpu.anchor
    on_cpu = bench.rated(bench.Figure(**{**asdict(figure), "device": "cpu"}), 187.8, None, 1_029.0)
    assert on_cpu.tflop_s == pytest.approx(150.24) and on_cpu.peak_fraction is None and on_cpu.anchor_fraction is None
    assert bench.peak_tflop_s(torch.device("cpu")) is None


def test_jpegs_are_written_by_a_pool_as_one_process_writes_them(tmp_path):
    bench.write_jpegs(tmp_path / "pool", 40)
    files = sorted((tmp_path / "pool" / "train").rglob("*.JPEG"), key=lambda p: int(p.stem))
    assert len(files) == 40
    with Image.open(files[0]) as plain, Image.open(files[3]) as subsampled:
        assert JpegImagePlugin.get_sampling(plain) == 0 and JpegImagePlugin.get_sampling(subsampled) == 2
        assert 300 <= plain.height <= 500 and 350 <= plain.width <= 500
    for k in range(10):
        (tmp_path / "one" / "train" / f"n{k:08d}").mkdir(parents=True)
    bench._write_jpeg_range(tmp_path / "one", 37, 38, 0)
    assert (tmp_path / "one" / "train" / "n00000007" / "37.JPEG").read_bytes() == files[37].read_bytes()


def test_the_input_path_alone_times_every_decoder_against_pil_on_full_passes_and_says_where_time_goes(tmp_path):
    out = tmp_path / "input.json"
    arguments = ["--device", "cpu", "--quick", "--input-only", "--imagenet-input", "6", "--batch", "4"]
    assert bench.main([*arguments, "--workers", "0", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert [f["decoder"] for f in figures] == list(bench.INPUT_DECODERS)  # and none of the engine's figures
    assert len({f["reference_img_s"] for f in figures}) == 1  # the reference is timed once
    for figure in figures:
        assert figure["name"] == "imagenet_input" and figure["px"] == 224 and figure["ours_img_s"] > 0
        assert figure["steps_timed"] == 16  # the 6 files repeated into four batches of 4, one round
        assert figure["ratio"] == pytest.approx(figure["ours_img_s"] / figure["reference_img_s"], rel=1e-2)
        assert figure["worker_ms_per_img"] > 0 and figure["main_process_img_s"] > 0
        # no workers: the one process does the workers' part too
        assert figure["workers_img_s"] == pytest.approx(1e3 / figure["worker_ms_per_img"], rel=1e-2)
    stages = {f["decoder"]: f for f in figures}
    # nvJPEG's workers only read the files; libjpeg-turbo's decode them
    assert stages["nvjpeg"]["worker_ms_per_img"] < stages["turbo"]["worker_ms_per_img"]


def test_fast_paths_and_an_input_smaller_than_a_batch_are_refused_with_one_sentence(capsys):
    assert bench.main(["--device", "cpu", "--cuda-graphs"]) == 2
    assert "CUDA graphs are for CUDA devices" in capsys.readouterr().err
    assert bench.main(["--device", "cpu", "--imagenet-input", "3", "--batch", "4"]) == 2
    assert "--imagenet-input must be an integer in [4," in capsys.readouterr().err
    assert bench.main(["--device", "cpu", "--input-only"]) == 2
    assert "--input-only times the ImageNet input path alone: give it --imagenet-input N" in capsys.readouterr().err
    assert bench.main(["--device", "cpu", "--input-only", "--imagenet-input", "64", "--processes", "2"]) == 2
    assert "--input-only times none of them." in capsys.readouterr().err
