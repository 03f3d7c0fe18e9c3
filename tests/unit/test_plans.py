"""What runs cost before they run (`costs`) and what a sweep, a search or the paper costs on N GPUs (`plans`,
`cli plan`): the work model against counts done by hand, prices from a benchmark file and from recorded
runs, and a recorded price that predicts a run it never saw."""

import json
import shutil
from dataclasses import asdict

import pytest

from dwlt_utils import bench, cli, costs, plans, search, transfer
from dwlt_utils.costs import Work
from dwlt_utils.errors import InputError, MissingInputError
from dwlt_utils.profiles import PAPER, QUICK
from dwlt_utils.tickets import ImpConfig

IMAGENET = 1_281_167


def paper_cell(**overrides) -> transfer.TransferConfig:
    args = dict(profile=PAPER, pretraining="adv", dataset="cifar10", regime="adv", ticket="dense", sparsity=0)
    return transfer.TransferConfig.create(**{**args, **overrides})


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


def write_bench(path, rates: dict[str, float], device: str = "cuda", arch: str = "resnet50", px: int = 224):
    """A benchmark file as `bench --json` writes it, with these images per second of the engine."""
    figures = [
        {
            **asdict(bench.Figure(name, px, device, 128, rate, rate / 3, 3.0, arch, 6, "ours", "reference")),
            "device_name": "Some GPU" if device == "cuda" else "cpu",
        }
        for name, rate in rates.items()
    ]
    path.write_text(json.dumps(figures))
    return path


RATES = {"clean_train": 100.0, "adv_train": 10.0, "pgd20_eval": 5.0}


def test_bench_figures_price_each_unit(tmp_path):
    prices = costs.bench_prices(write_bench(tmp_path / "bench.json", RATES), PAPER)
    assert prices.train == pytest.approx(0.01)  # 1 / 100
    assert prices.attack == pytest.approx((0.1 - 0.01) / 10)  # PGD-10 training less clean training, per step
    assert prices.forward == pytest.approx(0.2 / 62)  # SA + PGD-20 RA is 62 forwards
    assert prices.on_gpu and prices.source == "bench on Some GPU"
    # the quick profile's model is not what bench measures
    assert costs.bench_prices(tmp_path / "bench.json", QUICK) is None


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
        costs.bench_prices(path, PAPER)


def test_a_bench_file_without_every_figure_or_with_impossible_ones_is_refused(tmp_path):
    with pytest.raises(InputError, match="lacks positive figures pgd20_eval"):
        costs.bench_prices(write_bench(tmp_path / "a.json", {"clean_train": 100, "adv_train": 10}), PAPER)
    with pytest.raises(InputError, match="as fast as clean training"):
        costs.bench_prices(write_bench(tmp_path / "b.json", {**RATES, "adv_train": 100}), PAPER)


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
    # The ladders by hand: 18 trainings of 30 epochs over ImageNet, S-IMP clean, A-IMP with PGD-3 (twice).
    s_imp = 18 * 30 * IMAGENET * 0.01
    a_imp = 18 * 30 * IMAGENET * (0.01 + 3 * 0.009)
    assert f"IMP ladders: {(s_imp + 2 * a_imp) / 3600:,.2f} GPU-hours" in out
    assert f"IMP ladders: {(s_imp + 2 * a_imp) / 3600:,.2f} GPU-hours still to run, {a_imp / 3600:,.1f} h" in out
    # Every level: 3 pre-trainings × 3 data sets × 3 budgets × 20 levels × 2 regimes, one run each.
    assert "1080 transfer runs, one job each." in out
    assert "At most 162 cells of notebook 05 (both regimes each) instead of 540" in out
    assert "Priced off a GPU" not in out


QUICK_STD = dict(profile=QUICK, pretraining="adv", dataset="cifar10", regime="std", ticket="dense", sparsity=0)


def test_recorded_runs_price_by_their_seconds_per_forward(session, roots, plant_source):
    plant_source()
    full = transfer.TransferConfig.create(**QUICK_STD)
    wall = transfer.run_transfer(full, session, notebook="03_std_transfer").wall_s.iloc[0]
    pricer = costs.Pricer(roots.run_root)
    prices = pricer.price(QUICK, "std")
    assert prices.source == "1 recorded run (cpu, fp32)" and not prices.on_gpu
    per_forward = wall / costs.run_work(full).forwards  # a training step counts three forwards
    assert (prices.forward, prices.train, prices.attack) == pytest.approx(
        (per_forward, 3 * per_forward, 3 * per_forward)
    )
    quarter = costs.run_work(transfer.TransferConfig.create(**QUICK_STD, data_fraction=0.25))
    assert prices.seconds(quarter) == pytest.approx(wall * quarter.forwards / costs.run_work(full).forwards)
    with pytest.raises(MissingInputError, match="Nothing prices adv runs of the quick profile"):
        pricer.price(QUICK, "adv")


@pytest.mark.slow  # wall-clock times: kept out of the default suite, where other work may share the cores
def test_a_recorded_price_predicts_a_run_it_never_saw(session, roots, plant_source, tmp_path):
    """The price of one quick standard-transfer run on all the data predicts the wall time of one on a
    quarter of it (a model that ignored the data budget would be four times off)."""
    plant_source()
    transfer.run_transfer(transfer.TransferConfig.create(**QUICK_STD, epochs=2), session, notebook="03_std_transfer")
    shutil.rmtree(roots.run_root / "transfer")  # a warm-up, which prices nothing
    transfer.run_transfer(transfer.TransferConfig.create(**QUICK_STD), session, notebook="03_std_transfer")
    prices = costs.Pricer(roots.run_root).price(QUICK, "std")
    quarter = transfer.TransferConfig.create(**QUICK_STD, data_fraction=0.25)
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
