"""What runs cost before they run (`costs`) and what a sweep, a search or the paper costs on N GPUs (`plans`,
`cli plan`): the work model against counts done by hand, prices from a benchmark file and from recorded
runs, a recorded price that predicts a run it never saw, ImageNet ladders bound by their input, the AutoAttack
check's work, ladders spread over the GPUs that outnumber them, 32 px runs at 32 px prices, and the tests on
corrupted images."""

import json
import re
import shutil
from dataclasses import asdict

import pytest
from test_results import record

from dwlt_utils import bench, cli, costs, paths, plans, results, search, sweeps, tickets, transfer
from dwlt_utils.attacks import PGD20_EVAL
from dwlt_utils.autoattack import AutoAttack, AutoAttackCheck
from dwlt_utils.config import write_config
from dwlt_utils.corruptions import SEVERITIES
from dwlt_utils.costs import Work
from dwlt_utils.errors import InputError, MissingInputError
from dwlt_utils.profiles import PAPER, QUICK
from dwlt_utils.tickets import ImpConfig

IMAGENET = 1_281_167
TRAININGS = 18 * 30 * IMAGENET  # images a paper ladder trains on: 18 levels of 30 epochs over ImageNet


def paper_cell(regime="adv", **overrides) -> transfer.TransferConfig:
    given = dict(pretraining="adv", dataset="cifar10", ticket="dense", sparsity=0)
    return transfer.TransferConfig.create(PAPER, regime, {**given, **overrides})


@pytest.mark.parametrize(
    ("overrides", "work"),
    [
        # PGD-10 training, 100 epochs over 45,000 images; SA + PGD-20 RA (62 forwards) on 5,000 validation images
        # from epoch 45 (55 epochs) and on 10,000 test images for each of the two kept checkpoints.
        ({}, Work(100 * 45_000, 100 * 45_000 * 10, 55 * 5_000 * 62 + 2 * 10_000 * 62)),
        # clean training, 150 epochs; SA only (one forward) on validation every epoch and on the test set once
        ({"regime": "std"}, Work(150 * 45_000, 0, 150 * 5_000 + 10_000)),
        # SVHN: 80 epochs over 68,257 images, validated every epoch, 26,032 test images
        ({"dataset": "svhn"}, Work(80 * 68_257, 80 * 68_257 * 10, 80 * 5_000 * 62 + 2 * 26_032 * 62)),
        # VisDA-2017: 150 epochs over 152,397 renderings, validated every epoch on the 55,388 real images, which
        # are the test images too
        ({"regime": "std", "dataset": "visda17"}, Work(150 * 152_397, 0, 150 * 55_388 + 55_388)),
        # 1% of the data is the first 450 images; caps on the evaluated images and fewer epochs
        (
            {"data_fraction": 0.01, "epochs": 10, "val_images": 200, "test_images": 100, "eval_steps": 5},
            Work(10 * 450, 10 * 450 * 10, 6 * 200 * 17 + 2 * 100 * 17),  # 10 epochs validate from 4.5 → 5: 6
        ),
    ],
)
def test_the_work_of_a_transfer_run_is_counted_image_by_image(overrides, work):
    assert costs.run_work(paper_cell(**overrides)) == work


def test_the_work_of_imp_levels_is_their_epochs_over_the_source_images():
    a_imp = ImpConfig.create(profile=PAPER, pretraining="adv")
    assert costs.imp_work(a_imp, 18) == Work(18 * 30 * IMAGENET, 18 * 30 * IMAGENET * 3, 0)  # PGD-3
    s_imp = ImpConfig.create(profile=QUICK, pretraining="standard", source_fraction=0.5)
    assert costs.imp_work(s_imp, 2) == Work(2 * 1 * 1_500, 0, 0)  # the quick profile's 3,000 images, halved


def bench_figures(
    rates: dict[str, float], device: str = "cuda", arch: str = "resnet50", px: int = 224, ours: str = "ours"
) -> list[dict]:
    """The engine's figures as `bench --json` writes them, with these images per second."""
    return [
        {
            **asdict(bench.Figure(name, px, device, 128, rate, rate / 3, 3.0, arch, 6, ours, "reference")),
            "device_name": "Some GPU" if device == "cuda" else "cpu",
        }
        for name, rate in rates.items()
    ]


def write_bench(path, rates: dict[str, float], *, inputs: tuple[dict, ...] = (), **figure):
    """A benchmark file with these images per second of the engine (`bench_figures`), and these input figures
    (`input_figure`) or others."""
    path.write_text(json.dumps([*bench_figures(rates, **figure), *inputs]))
    return path


def input_figure(ours: float, pil: float, decoder: str | None = None) -> dict:
    """An `imagenet_input` figure: a decoder's images per second against PIL's (no decoder: an older bench's)."""
    figure = bench.Figure("imagenet_input", 224, "cuda", 256, ours, pil, 2.0, "none (input only)", 1536, "", "")
    named = {"decoder": decoder} if decoder else {}
    return {**asdict(figure), "device_name": "Some GPU", **named}


RATES = {"clean_train": 100.0, "adv_train": 10.0, "pgd20_eval": 5.0}


def test_bench_figures_price_each_unit(tmp_path):
    figures = costs.BenchFile.read(write_bench(tmp_path / "bench.json", RATES))
    prices = figures.prices(PAPER, 224)
    assert prices.train == pytest.approx(0.01)  # 1 / 100
    assert prices.attack == pytest.approx((0.1 - 0.01) / 10)  # PGD-10 training less clean training, per step
    assert prices.forward == pytest.approx(0.2 / 62)  # SA + PGD-20 RA is 62 forwards
    assert prices.on_gpu and prices.source == "bench on Some GPU" and not prices.includes_input
    # the quick profile's model is not what bench measures
    assert figures.prices(QUICK, 16) is None
    assert figures.prices(PAPER, 32) is None  # nor is the paper's model at 32 px
    # figures of processes timed at once are their sum: no run's price
    shared = [{**figure, "ours_img_s": 4 * figure["ours_img_s"], "processes": 4} for figure in bench_figures(RATES)]
    path = tmp_path / "shared.json"
    path.write_text(json.dumps([*json.loads((tmp_path / "bench.json").read_text()), *shared]))
    assert costs.BenchFile.read(path).prices(PAPER, 224) == prices


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not a benchmark file"),
        ('[{"name": "adv_train"}]', "is not a benchmark file"),
    ],
)
def test_a_bad_bench_file_is_one_sentence(tmp_path, content, message):
    path = tmp_path / "bench.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        costs.BenchFile.read(path)


def test_a_bench_file_without_every_figure_or_with_impossible_ones_is_refused(tmp_path):
    with pytest.raises(InputError, match="lacks the figures pgd20_eval"):
        costs.BenchFile.read(write_bench(tmp_path / "a.json", {"clean_train": 100, "adv_train": 10})).prices(PAPER, 224)
    with pytest.raises(InputError, match="as fast as clean training"):
        costs.BenchFile.read(write_bench(tmp_path / "b.json", {**RATES, "adv_train": 100})).prices(PAPER, 224)


def test_longest_jobs_go_first_to_the_gpu_free_first():
    assert plans.makespan([], 4) == 0
    assert plans.makespan([5.0], 3) == 5
    assert plans.makespan([3, 3, 2, 2, 2], 2) == 7  # LPT: 3 | 3, then 2 → 5 | 3, 2 → 5 | 5, 2 → 7
    assert plans.makespan([1] * 10, 10) == 1


def test_a_plan_counts_the_levels_its_search_decides():
    assert search.bisection_levels(19, 10) == [10, 15, 12, 11]
    assert search.bisection_levels(19, 0) == [10, 5, 2, 1]
    assert search.bisection_levels(11, 11) == [6, 9, 10, 11]
    assert plans.worst_bisection(19) == 5 and plans.worst_bisection(11) == 4


def test_the_paper_plan_is_its_bench_figures_times_its_work(tmp_path, capsys):
    bench_file = write_bench(tmp_path / "bench.json", RATES)
    arguments = ["plan", "paper", "--gpus", "64", "--bench", str(bench_file), "-p", "run_root", str(tmp_path / "r")]
    assert cli.main(arguments) == 0
    out = capsys.readouterr().out
    # The ladders by hand: 18 trainings of 30 epochs over ImageNet, S-IMP clean, A-IMP with PGD-3 (twice); 64
    # GPUs give each of the three ladders 16 (64 // 3 = 21), which share its work.
    s_imp = TRAININGS * 0.01
    a_imp = TRAININGS * (0.01 + 3 * 0.009)
    assert f"IMP ladders: {(s_imp + 2 * a_imp) / 3600:,.2f} GPU-hours" in out
    assert f"IMP ladders: {(s_imp + 2 * a_imp) / 3600:,.2f} GPU-hours still to run, {a_imp / 16 / 3600:,.1f} h" in out
    # Every level: 3 pre-trainings × 3 data sets × 3 budgets × 20 levels × 2 regimes, one run each.
    assert "1080 transfer runs, one job each." in out
    assert "At most 162 executions of notebook 05 (both regimes each) instead of 540" in out
    assert "Priced off a GPU" not in out


QUICK_STD = dict(pretraining="adv", dataset="cifar10", ticket="dense", sparsity=0)


def quick_std(**overrides) -> transfer.TransferConfig:
    return transfer.TransferConfig.create(QUICK, "std", {**QUICK_STD, **overrides})


def test_recorded_runs_price_by_their_seconds_per_forward(session, roots, plant_source):
    plant_source()
    full = quick_std()
    wall = transfer.run_transfer(full, session, notebook="03_std_transfer").wall_s.iloc[0]
    pricer = costs.Pricer(roots.run_root)
    prices = pricer.price(QUICK, "std", 16)
    assert prices.source == "1 recorded run (cpu, fp32)" and not prices.on_gpu
    per_forward = wall / costs.run_work(full).forwards  # a training step counts three forwards
    assert (prices.forward, prices.train, prices.attack) == pytest.approx(
        (per_forward, 3 * per_forward, 3 * per_forward)
    )
    quarter = costs.run_work(quick_std(data_fraction=0.25))
    assert prices.seconds(quarter) == pytest.approx(wall * quarter.forwards / costs.run_work(full).forwards)
    with pytest.raises(MissingInputError, match="Nothing prices adv runs of the quick profile at 16 px"):
        pricer.price(QUICK, "adv", 16)


@pytest.mark.slow  # wall-clock times: kept out of the default suite, where other work may share the cores
def test_a_recorded_price_predicts_a_run_it_never_saw(session, roots, plant_source, tmp_path):
    """The price of one quick standard-transfer run on all the data predicts the wall time of one on a
    quarter of it (a model that ignored the data budget would be four times off)."""
    plant_source()
    transfer.run_transfer(quick_std(epochs=2), session, notebook="03_std_transfer")
    shutil.rmtree(roots.run_root / "transfer")  # a warm-up, which prices nothing
    transfer.run_transfer(quick_std(), session, notebook="03_std_transfer")
    prices = costs.Pricer(roots.run_root).price(QUICK, "std", 16)
    quarter = quick_std(data_fraction=0.25)
    predicted = prices.seconds(costs.run_work(quarter))
    measured = transfer.run_transfer(quarter, session, notebook="03_std_transfer").wall_s.iloc[0]
    assert 0.4 < predicted / measured < 2.5, (predicted, measured)


def test_plan_refuses_what_it_cannot_price(tmp_path, capsys):
    root = ["-p", "run_root", str(tmp_path / "r"), "-p", "quick", "True"]
    assert cli.main(["plan", "sweep", str(cli.NOTEBOOKS / "06_figures.ipynb"), *root]) == 2
    assert "06_figures.ipynb takes minutes and is not planned" in capsys.readouterr().err
    assert cli.main(["plan", "search", "--pretraining", "adv", "--dataset", "cifar10", *root]) == 2
    err = capsys.readouterr().err
    assert "Nothing prices a-imp runs of the quick profile" in err and "bench does not measure its model" in err
    assert cli.main(["plan", "paper", "--seeds", "1,x", *root]) == 2
    assert "--seeds lists integer seeds" in capsys.readouterr().err


def test_a_ladder_on_several_processes_holds_as_many_gpus_for_a_share_of_the_time(tmp_path):
    pricer = costs.Pricer(tmp_path / "r", write_bench(tmp_path / "bench.json", RATES))
    fixed = {"run_root": str(tmp_path / "r"), "pretraining": "adv", "dataset": "cifar10", "data_fraction": 1.0}
    one, eight = (
        plans.search_plan({**fixed, "imp_processes": n}, top_level=19, seeds=[1], pricer=pricer) for n in (1, 8)
    )
    ladder_one, ladder_eight = one.stages[0], eight.stages[0]
    assert len(ladder_one.jobs) == 1 and len(ladder_eight.jobs) == 8
    assert ladder_eight.gpu_hours() == pytest.approx(ladder_one.gpu_hours())
    assert ladder_eight.wall_hours(8) == pytest.approx(ladder_one.wall_hours(8) / 8)


# ---- ImageNet ladders: each image at the slower of its training and its input


def paper_ladder(pretraining: str = "standard", decoder: str = "pil") -> ImpConfig:
    return ImpConfig.create(profile=PAPER, pretraining=pretraining, decoder=decoder)


def test_bench_input_figures_give_each_decoder_its_rate_and_pil_the_reference(tmp_path):
    older = costs.BenchFile.read(write_bench(tmp_path / "a.json", RATES, inputs=(input_figure(1220.3, 531.5),)))
    assert older.input_rates() == {"nvjpeg": 1220.3, "pil": 531.5}  # an older bench measured nvJPEG
    figures = (input_figure(800, 40, "turbo"), input_figure(1500, 45, "nvjpeg"), input_figure(900, 42, "mixed"))
    newer = costs.BenchFile.read(write_bench(tmp_path / "b.json", RATES, inputs=figures))
    assert newer.input_rates() == {"turbo": 800, "nvjpeg": 1500, "mixed": 900, "pil": 40}  # PIL: the slowest


def test_an_imagenet_ladder_is_priced_at_the_slower_of_its_training_and_its_input(tmp_path):
    inputs = (input_figure(1000, 50),)  # nvJPEG 1,000 img/s, PIL 50 img/s
    pricer = costs.Pricer(tmp_path / "r", write_bench(tmp_path / "bench.json", RATES, inputs=inputs))
    # S-IMP trains an image in 0.01 s and PIL delivers one every 0.02 s: input-bound
    seconds, source = pricer.ladder_seconds(paper_ladder(), 18)
    assert seconds == pytest.approx(TRAININGS * (1 / 50))
    assert source == "bench on Some GPU, input-bound (pil 50 img/s)"
    # nvJPEG delivers one every 0.001 s: training-bound
    seconds, source = pricer.ladder_seconds(paper_ladder(decoder="nvjpeg"), 18)
    assert seconds == pytest.approx(TRAININGS * 0.01)
    assert source == "bench on Some GPU, training-bound (nvjpeg 1,000 img/s)"
    # A-IMP trains an image in 0.01 + 3 × 0.009 = 0.037 s, slower than PIL's 0.02 s
    seconds, source = pricer.ladder_seconds(paper_ladder("adv"), 18)
    assert seconds == pytest.approx(TRAININGS * 0.037)
    assert source == "bench on Some GPU, training-bound (pil 50 img/s)"
    assert pricer.caveats() == []


def test_a_quick_ladder_reads_arrays_and_pays_no_input(tmp_path):
    pricer = costs.Pricer(tmp_path / "r", write_bench(tmp_path / "bench.json", RATES, inputs=(input_figure(10, 1),)))
    recorded = costs.Prices.per_forward(0.001, "1 recorded ladder (cpu, fp32)", False)
    pricer.recorded[("quick", "s-imp", 16)] = recorded
    ladder = ImpConfig.create(profile=QUICK, pretraining="standard")
    assert pricer.ladder_seconds(ladder, 2) == (recorded.seconds(costs.imp_work(ladder, 2)), recorded.source)
    assert pricer.ladder_seconds(ladder, 2)[0] == pytest.approx(2 * 3_000 * 0.003)  # not 2 × 3,000 × 1 s


def test_a_ladder_whose_input_rate_was_not_measured_is_priced_by_its_training_and_the_plan_says_so(tmp_path):
    bf16 = "cuda, bf16 autocast, channels_last"
    pricer = costs.Pricer(tmp_path / "r", write_bench(tmp_path / "bench.json", RATES, ours=bf16))
    seconds, source = pricer.ladder_seconds(paper_ladder(), 18)
    assert seconds == pytest.approx(TRAININGS * 0.01)
    assert source == "bench on Some GPU, training alone (pil input not measured)"
    caveats = pricer.caveats()
    assert caveats[0].startswith("The input rate of the pil decoder was not measured")
    assert "price may be low" in caveats[0]
    assert caveats[1].startswith("The bench timed training under bf16 autocast and the IMP ladders train in fp32")


def test_the_paper_plan_names_each_ladder_row_by_its_bound(tmp_path, capsys):
    bench_file = write_bench(tmp_path / "bench.json", RATES, inputs=(input_figure(1000, 50),))
    assert cli.main(["plan", "paper", "--bench", str(bench_file), "-p", "run_root", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    s_imp, a_imp = TRAININGS / 50, TRAININGS * 0.037
    assert f"IMP ladders: {(s_imp + 2 * a_imp) / 3600:,.2f} GPU-hours still to run" in out
    assert re.search(r"S-IMP of standard to level 19 .* bench on Some GPU, input-bound \(pil 50 img/s\)", out)
    assert re.search(r"A-IMP of adv to level 19 .* bench on Some GPU, training-bound \(pil 50 img/s\)", out)
    assert "not measured" not in out


# ---- the AutoAttack check


def test_an_autoattack_check_is_counted_at_its_most():
    # APGD-CE 100 steps, APGD-T and FAB-T 9 targets × 100 steps, 3 forwards a step; Square 5,000 queries; the
    # evaluation's clean and final forwards; PGD-20's SA and RA beside it (2 + 3 × 20)
    assert costs.check_forwards(PGD20_EVAL, AutoAttack(8)) == 3 * (100 + 900 + 900) + 5000 + 2 + 62 == 10_764
    dense = paper_cell()
    assert costs.check_work(dense, 1000) == Work(forward=2 * 1000 * 10_764)  # best SA and best RA


def sweep_executions(tmp_path, notebook: str = "04_adv_transfer", **fixed) -> list[sweeps.Execution]:
    path = cli.NOTEBOOKS / f"{notebook}.ipynb"
    return sweeps.grid_executions(path, {"run_root": str(tmp_path / "r"), **fixed}, {}, tmp_path / "executed")


def test_a_sweep_asked_for_autoattack_adds_the_check_to_its_adversarial_runs_unless_on_disk(tmp_path):
    pricer = costs.Pricer(tmp_path / "r", write_bench(tmp_path / "bench.json", RATES))
    forward = 0.2 / 62
    runs = costs.run_work(paper_cell(ticket="imp", sparsity=0.9141)) + costs.run_work(paper_cell())
    [plain] = plans.sweep_plan(sweep_executions(tmp_path), pricer).stages[0].jobs
    assert plain.seconds == pytest.approx(pricer.price(PAPER, "adv", 224).seconds(runs))
    checked_executions = sweep_executions(tmp_path, eval_attack="autoattack")
    [checked] = plans.sweep_plan(checked_executions, pricer).stages[0].jobs
    # the cell and its dense baseline: best SA and best RA of each on the first 1,000 test images
    assert checked.seconds == pytest.approx(plain.seconds + 2 * 2 * 1000 * 10_764 * forward)
    assert checked.what == "adv transfer + AutoAttack"
    # a check on disk, measured by today's attacks, is done
    check = AutoAttackCheck(images=1000)
    _, planned = sweeps.planned(checked_executions[0])
    for config, directory in planned.runs:
        rows = [
            record(
                ticket=config.ticket,
                level=config.level,
                sparsity=config.sparsity,
                metric="RA",
                attack=name,
                checkpoint=checkpoint,
                run_id=str(directory),
            )
            for name in check.attack_names(config)
            for checkpoint in config.recipe.keep
        ]
        directory.mkdir(parents=True)
        results.write_records(directory, rows, check.file(directory))
    plan = plans.sweep_plan(checked_executions, pricer)
    assert plan.stages[0].jobs[0].seconds == pytest.approx(plain.seconds)
    assert "AutoAttack check (2 done on disk)" in plan.describe(1)


def test_runs_sharing_a_gpu_are_slowed_as_the_bench_says_and_hold_a_share_of_it(tmp_path, capsys):
    # four processes at once train PGD-10 at 2.5 times one process's rate: each run takes 4 / 2.5 as long
    shared = [{**figure, "ours_img_s": 2.5 * figure["ours_img_s"], "processes": 4} for figure in bench_figures(RATES)]
    path = tmp_path / "shared.json"
    path.write_text(json.dumps([*bench_figures(RATES), *shared]))
    pricer = costs.Pricer(tmp_path / "r", path)
    alone, sharing = (plans.sweep_plan(sweep_executions(tmp_path), pricer, per_gpu) for per_gpu in (1, 4))
    [one], [four] = alone.stages[0].jobs, sharing.stages[0].jobs
    assert four.seconds == pytest.approx(one.seconds * 4 / 2.5) and four.priced_from.endswith("4 per GPU (×1.60 each)")
    assert sharing.gpu_hours() == pytest.approx(four.seconds / 4 / 3600)  # a quarter of a GPU
    assert sharing.wall_hours(1) == pytest.approx(four.seconds / 3600)  # one job: it runs alone all the same
    assert "(4 transfer jobs per GPU, else one, stages one after the other)" in sharing.describe(1)
    # the command, and a bench file that cannot price sharing: one sentence
    arguments = ["plan", "sweep", str(cli.NOTEBOOKS / "04_adv_transfer.ipynb"), "-p", "run_root", str(tmp_path / "r")]
    assert cli.main([*arguments, "--bench", str(path), "--per-gpu", "4"]) == 0
    assert "4 jobs sharing each" in capsys.readouterr().out
    plain = write_bench(tmp_path / "plain.json", RATES)
    assert cli.main([*arguments, "--bench", str(plain), "--per-gpu", "4"]) == 2
    said = capsys.readouterr().err
    assert "--per-gpu 4 prices runs sharing a GPU by bench figures of 4 processes at once" in said
    assert "--px 224 --processes 4 --json FILE" in said
    with pytest.raises(InputError, match="an IMP ladder of notebook 02 is priced on a GPU of its own"):
        plans.sweep_plan(sweep_executions(tmp_path, "02_imp"), pricer, 4)
    searched = plans.search_plan(search_fixed(tmp_path), top_level=19, seeds=[1], pricer=pricer, per_gpu=4)
    assert [stage.per_gpu for stage in searched.stages] == [1, 4, 4]  # the ladder keeps its GPU


def test_a_gpu_check_report_prices_from_its_eager_bench_steps(tmp_path):
    def step(name: str, scale: float, **fields) -> list[dict]:
        return [{**f, "ours_img_s": scale * f["ours_img_s"], "step": name, **fields} for f in bench_figures(RATES)]

    report = {
        "environment": {},
        "figures": [*step("bench", 1), *step("bench_compile", 3), *step("bench_shared", 2, processes=4)],
    }
    path = tmp_path / "nvidia-h200-2026-12-01.json"
    path.write_text(json.dumps(report))
    figures = costs.BenchFile.read(path)
    assert figures.prices(PAPER, 224) == costs.BenchFile.read(write_bench(tmp_path / "b.json", RATES)).prices(
        PAPER, 224
    )
    assert figures.slowdown(PAPER, 224, "adv", 4) == pytest.approx(4 / 2)


def test_a_shared_run_priced_without_the_check_gets_a_job_for_the_check_alone(tmp_path):
    pricer = costs.Pricer(tmp_path / "r", write_bench(tmp_path / "bench.json", RATES))
    [plain] = plans.sweep_plan(sweep_executions(tmp_path), pricer).stages[0].jobs
    # two executions of the same cell: the second asks for the check of the runs the first prices
    grid = {"eval_attack": ["pgd20", "autoattack"]}
    executions = sweeps.grid_executions(
        cli.NOTEBOOKS / "04_adv_transfer.ipynb", {"run_root": str(tmp_path / "r")}, grid, tmp_path
    )
    first, second = plans.sweep_plan(executions, pricer).stages[0].jobs
    assert first.seconds == pytest.approx(plain.seconds) and first.what == "adv transfer"
    assert second.seconds == pytest.approx(2 * 2 * 1000 * 10_764 * 0.2 / 62)  # the cell's and its baseline's
    assert second.what == "adv transfer (priced above) + AutoAttack"


def test_plan_paper_counts_one_check_per_adversarial_run_when_asked(tmp_path, capsys):
    arguments = ["plan", "paper", "--bench", str(write_bench(tmp_path / "b.json", RATES)), "-p", "run_root", "r"]

    def transfer_hours(extra: list[str]) -> float:
        assert cli.main([*arguments, *extra]) == 0
        out = capsys.readouterr().out
        return float(re.search(r"transfer, every level: ([\d,.]+) GPU-hours", out)[1].replace(",", "")), out

    plain, _ = transfer_hours([])
    checked, out = transfer_hours(["--autoattack"])
    # 3 pre-trainings × 3 data sets × 3 budgets × 20 levels adversarial runs, each checked at its 2 checkpoints
    assert checked - plain == pytest.approx(540 * 2 * 1000 * 10_764 * 0.2 / 62 / 3600, abs=0.01)
    assert "each kept checkpoint counted at 10,764 forwards per test image: an upper bound" in out
    assert cli.main([*arguments, "--autoattack", "-p", "eval_attack", "pgd20"]) == 2
    assert "--autoattack and -p eval_attack pgd20 ask for different checks" in capsys.readouterr().err


# ---- ladders spread over the GPUs that outnumber them


def test_a_ladder_takes_the_most_gpus_that_split_its_batch():
    assert [plans.ddp_processes(gpus, 2048) for gpus in (1, 2, 3, 21, 64, 5000)] == [1, 2, 2, 16, 64, 2048]
    assert plans.ddp_processes(64, 96) == 32
    assert tickets.node_split(4) == {"nproc_per_node": 4, "nnodes": 1}
    assert tickets.node_split(32) == {"nproc_per_node": 8, "nnodes": 4}
    assert tickets.node_split(12) == {"nproc_per_node": 6, "nnodes": 2}


def search_fixed(tmp_path) -> dict:
    return {"run_root": str(tmp_path / "r"), "pretraining": "adv", "dataset": "cifar10", "data_fraction": 1.0}


def test_gpus_that_outnumber_the_ladders_share_them_under_ddp(tmp_path):
    pricer = costs.Pricer(tmp_path / "r", write_bench(tmp_path / "bench.json", RATES))
    fixed = {"run_root": str(tmp_path / "r")}
    a_imp = TRAININGS * 0.037
    for gpus, processes in ((3, 1), (7, 2), (64, 16)):
        every, by_search = plans.paper_plans(fixed, seeds=[1], pricer=pricer, gpus=gpus)
        ladders = every.stages[0]
        assert len(ladders.jobs) == 3 * processes
        assert ladders.wall_hours(gpus) == pytest.approx(a_imp / processes / 3600)
        said = "\n".join(by_search.notes)
        assert (f"-p imp_processes {processes}" in said) == (processes > 1)
    assert "planned on 16 GPUs as 16 DDP processes" in said and "-p nproc_per_node 8 -p nnodes 2" in said
    searched = plans.search_plan(search_fixed(tmp_path), top_level=19, seeds=[1], pricer=pricer, gpus=64)
    assert len(searched.stages[0].jobs) == 64  # one ladder takes all 64 GPUs


def test_a_ladder_started_on_one_process_stays_on_it(tmp_path):
    pricer = costs.Pricer(tmp_path / "r", write_bench(tmp_path / "bench.json", RATES))
    ladder, session = search.ladder_needed(search_fixed(tmp_path), 19)
    paths.level_training_dir(session.roots.imp_ladder(ladder, 1), 1).mkdir(parents=True)  # level 1 training
    searched = plans.search_plan(search_fixed(tmp_path), top_level=19, seeds=[1], pricer=pricer, gpus=64)
    assert len(searched.stages[0].jobs) == 1
    assert any("stays on 1 process: it is partly trained on disk on 1 process" in note for note in searched.notes)
    every, _ = plans.paper_plans({"run_root": str(tmp_path / "r")}, seeds=[1], pricer=pricer, gpus=64)
    assert len(every.stages[0].jobs) == 1 + 2 * 16  # the other two share the 63 GPUs left: 31 each, 16 used


# ---- bench files the plan cannot read


@pytest.mark.parametrize("rate", [float("nan"), float("inf"), 0.0, -5.0])
def test_a_bench_figure_that_is_not_a_positive_rate_is_refused(tmp_path, capsys, rate):
    path = write_bench(tmp_path / "bench.json", {**RATES, "clean_train": rate})
    arguments = ["plan", "paper", "--bench", str(path), "-p", "run_root", str(tmp_path / "r")]
    assert cli.main(arguments) == 2
    err = capsys.readouterr().err
    assert f"{path} gives its clean_train figure (224 px) ours_img_s = {rate:g}, which is not a positive" in err
    inputs = (input_figure(1000, rate, "turbo"),)
    with pytest.raises(InputError, match=r"imagenet_input figure \(224 px, turbo decoder\) reference_img_s"):
        costs.BenchFile.read(write_bench(tmp_path / "input.json", RATES, inputs=inputs))


def test_a_bench_file_without_the_paper_models_figures_says_so(tmp_path, capsys):
    path = write_bench(tmp_path / "bench.json", RATES, arch="resnet50_32px", px=32)
    assert cli.main(["plan", "paper", "--bench", str(path), "-p", "run_root", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{path} has none of the figures of resnet50 at 224 px that price" in err
    assert "--bench FILE" not in err


# ---- 32 px runs: the model with the CIFAR stem, priced at its own size

RATES_32 = {"clean_train": 1000.0, "adv_train": 250.0, "pgd20_eval": 100.0}


def bench_224_and_32(tmp_path):
    """A bench file of the paper's model at 224 px (`RATES`) and with the CIFAR stem at 32 px (`RATES_32`)."""
    at_32 = bench_figures(RATES_32, arch="resnet50_32px", px=32)
    return write_bench(tmp_path / "bench.json", RATES, inputs=tuple(at_32))


def test_a_32px_sweep_is_priced_at_the_32px_rates(tmp_path):
    pricer = costs.Pricer(tmp_path / "r", bench_224_and_32(tmp_path))
    runs = [paper_cell(ticket="imp", sparsity=0.9141, resolution=32), paper_cell(resolution=32)]
    work = costs.run_work(runs[0]) + costs.run_work(runs[1])
    [job] = plans.sweep_plan(sweep_executions(tmp_path, resolution=32), pricer).stages[0].jobs
    # a training step 1 / 1,000 s, an attack step (1 / 250 - 1 / 1,000) / 10, a forward 1 / 100 / 62
    by_hand = work.train / 1000 + work.attack * (1 / 250 - 1 / 1000) / 10 + work.forward / 100 / 62
    assert job.px == 32 and job.seconds == pytest.approx(by_hand)
    [full] = plans.sweep_plan(sweep_executions(tmp_path), pricer).stages[0].jobs  # the same images at 224 px
    assert full.px == 224 and full.seconds == pytest.approx(pricer.price(PAPER, "adv", 224).seconds(work))


def test_plan_sweep_takes_the_new_parameters_and_refuses_a_bench_without_32px_figures(tmp_path, capsys):
    notebook = str(cli.NOTEBOOKS / "04_adv_transfer.ipynb")
    arguments = ["plan", "sweep", notebook, "-p", "run_root", str(tmp_path / "r"), "-p", "resolution", "32"]
    only_224 = write_bench(tmp_path / "224.json", RATES)
    assert cli.main([*arguments, "--bench", str(only_224)]) == 2
    err = capsys.readouterr().err
    assert f"{only_224} has none of the figures of resnet50_32px at 32 px that price adv runs" in err
    asked = ["-p", "eval_corruptions", "True", "--grid", "test_transform=resize_crop"]
    assert cli.main([*arguments, *asked, "--bench", str(bench_224_and_32(tmp_path))]) == 0
    assert re.search(r"adv transfer \+ corruptions +cifar10 +1\.000 +32 +1 +0 ", capsys.readouterr().out)


def test_a_plan_of_visda_runs_says_their_input_is_not_priced(tmp_path):
    pricer = costs.Pricer(tmp_path / "r", write_bench(tmp_path / "bench.json", RATES))
    visda = sweep_executions(tmp_path, "03_std_transfer", dataset="visda17", ticket="dense", sparsity=0)
    assert "VisDA-2017 runs read their JPEGs through PIL" in plans.sweep_plan(visda, pricer).describe(1)
    assert "VisDA" not in plans.sweep_plan(sweep_executions(tmp_path, "03_std_transfer"), pricer).describe(1)


def test_a_recorded_run_prices_only_runs_of_its_image_size(tmp_path):
    config = quick_std(resolution=32)  # the quick profile's 32 px pipeline is 8 px
    run = tmp_path / "r" / "transfer" / "cell" / "seed_1"
    run.mkdir(parents=True)
    write_config(paths.config_file(run), config)
    paths.records_file(run).write_text("wall_s,device\n60.0,cpu\n")
    pricer = costs.Pricer(tmp_path / "r")
    assert pricer.price(QUICK, "std", 8).forward == pytest.approx(60 / costs.run_work(config).forwards)
    with pytest.raises(MissingInputError, match="Nothing prices std runs of the quick profile at 16 px"):
        pricer.price(QUICK, "std", 16)


# ---- the tests on corrupted images


@pytest.mark.parametrize(
    ("notebook", "per_run"),
    [
        # 15 corruptions × 5 severities × 2 kept checkpoints × 10,000 test images × 62 forwards (SA + PGD-20 RA)
        ("04_adv_transfer", 15 * 5 * 2 * 10_000 * 62),
        # standard transfer keeps one checkpoint and tests it by SA alone: a forward per image
        ("03_std_transfer", 15 * 5 * 1 * 10_000 * 1),
    ],
)
def test_the_tests_on_corrupted_images_add_their_forwards_to_every_run(tmp_path, notebook, per_run):
    pricer = costs.Pricer(tmp_path / "r", write_bench(tmp_path / "bench.json", RATES))
    plain, asked = (
        plans.sweep_plan(sweep_executions(tmp_path, notebook, eval_corruptions=value), pricer)
        for value in (False, True)
    )
    [before], [after] = plain.stages[0].jobs, asked.stages[0].jobs
    assert after.seconds - before.seconds == pytest.approx(2 * per_run * 0.2 / 62)  # the cell and its dense baseline
    assert after.what.endswith(" transfer + corruptions") and before.what.endswith(" transfer")
    assert "tests on corrupted images (0 done on disk)" in asked.describe(1) and "(15 × 5 sets)" in asked.describe(1)
    assert "corrupted" not in plain.describe(1)


def test_a_search_names_the_extra_tests_its_jobs_carry(tmp_path):
    pricer = costs.Pricer(tmp_path / "r", write_bench(tmp_path / "bench.json", RATES))
    fixed = {**search_fixed(tmp_path), "eval_corruptions": True}
    dense, step = plans.search_plan(fixed, top_level=19, seeds=[1], pricer=pricer).stages[1:]
    assert [job.what for job in dense.jobs] == ["dense, std transfer + adv transfer + corruptions"]
    assert [job.what for job in step.jobs] == ["ticket, std transfer + adv transfer + corruptions"]


def run_rows(config: transfer.TransferConfig, directory, **test_set) -> list[dict]:
    """The records of a run's SA (and RA) at each kept checkpoint: on its test images, or on a corrupted set."""
    metrics = ("SA", "RA") if config.recipe.val_attack else ("SA",)
    cell = dict(ticket=config.ticket, level=config.level, sparsity=config.sparsity, run_id=str(directory))
    return [record(**cell, **test_set, metric=m, checkpoint=k) for m in metrics for k in config.recipe.keep]


def test_a_finished_run_with_its_corruption_records_on_disk_is_done(tmp_path):
    pricer = costs.Pricer(tmp_path / "r", write_bench(tmp_path / "bench.json", RATES))
    executions = sweep_executions(tmp_path, eval_corruptions=True)
    _, planned = sweeps.planned(executions[0])
    for config, directory in planned.runs:
        directory.mkdir(parents=True)
        results.write_records(directory, run_rows(config, directory))
    # trained and tested: the corruption tests are left, 2 runs × 15 × 5 × 2 checkpoints × 10,000 images × 62
    [trained] = plans.sweep_plan(executions, pricer).stages[0].jobs
    assert trained.seconds == pytest.approx(2 * 15 * 5 * 2 * 10_000 * 0.2) and not trained.done
    for config, directory in planned.runs:
        rows = [
            row
            for corruption in transfer.corruptions_of(config)
            for severity in SEVERITIES
            for row in run_rows(config, directory, corruption=corruption, severity=severity)
        ]
        results.write_records(directory, rows, paths.corruption_file(directory))
    plan = plans.sweep_plan(executions, pricer)
    [job] = plan.stages[0].jobs
    assert job.done and job.seconds == 0
    assert "tests on corrupted images (2 done on disk)" in plan.describe(1)
