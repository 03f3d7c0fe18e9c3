"""AutoAttack beside PGD-20: its published settings, its contract as an attack, the validation of the notebook
parameters, and the side-by-side table on hand-made records."""

import pytest
import torch
import torch.nn as nn
from test_results import record

from dwlt_utils import autoattack, results, transfer
from dwlt_utils.attacks import PGD20_EVAL
from dwlt_utils.autoattack import AutoAttack, AutoAttackCheck, side_by_side
from dwlt_utils.errors import InputError
from dwlt_utils.evaluate import EVAL_SEED, evaluate
from dwlt_utils.notebook import Parameters
from dwlt_utils.profiles import QUICK
from dwlt_utils.transfer import TransferConfig


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
    ).eval()


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(12, 3, 8, 8, generator=g), torch.randint(0, 10, (12,), generator=g)


def test_the_attacks_are_composed_at_the_published_settings(model, batch, monkeypatch, torchattacks):
    composed = []

    class Recorded(torchattacks.MultiAttack):
        def __init__(self, attacks):
            composed.extend(attacks)
            super().__init__(attacks)

    monkeypatch.setattr(torchattacks, "MultiAttack", Recorded)
    AutoAttack(eps_255=8)(model, *batch, torch.Generator().manual_seed(0))
    apgd, apgd_t, fab_t, square = composed
    assert [type(a).__name__ for a in composed] == ["APGD", "APGDT", "FAB", "Square"]
    assert all(a.eps == pytest.approx(8 / 255) and a.norm == "Linf" and a.n_restarts == 1 for a in composed)
    assert apgd.steps == apgd_t.steps == fab_t.steps == 100 and apgd.loss == "ce"
    assert apgd_t.n_target_classes == fab_t.n_target_classes == 9 and fab_t.multi_targeted
    # the reference's standard version does not rescale Square's schedule; torchattacks does by default
    assert square.n_queries == 5000 and square.p_init == 0.8 and square.rescale_schedule is False


def test_an_autoattack_is_an_attack_of_the_ball_that_keeps_the_model_and_the_global_random_state(model, batch):
    x, y = batch
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    state = torch.random.get_rng_state()
    x_adv = AutoAttack(eps_255=8, iterations=10, square_queries=50)(model, x, y, torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max().item() <= 8 / 255 + 1e-6
    assert 0 <= x_adv.min().item() and x_adv.max().item() <= 1
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.random.get_rng_state(), state)


class OneBatch:
    """The evaluation batches of `evaluate`: these images, once."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def eval(self, batch_size):
        yield self.x, self.y


def test_autoattack_breaks_at_least_what_pgd20_breaks_on_the_same_images(model, batch):
    x, _ = batch
    # Labels the model predicts: every image starts correctly classified, so RA measures the attacks alone.
    with torch.no_grad():
        y = model(x).argmax(1)
    pgd = evaluate(model, OneBatch(x, y), attack=PGD20_EVAL)
    auto = evaluate(model, OneBatch(x, y), attack=AutoAttack(eps_255=8, iterations=10, square_queries=50))
    assert pgd["SA"] == auto["SA"] == 100
    assert auto["RA"] <= pgd["RA"] < 100


def quick_cells(regimes=("adv",)):
    return [
        TransferConfig.create(QUICK, r, dict(pretraining="adv", dataset="cifar10", ticket="imp", sparsity=0.36))
        for r in regimes
    ]


@pytest.mark.parametrize(
    ("eval_attack", "images", "regimes", "message"),
    [
        ("pgd50", 0, ("adv",), "eval_attack"),
        ("autoattack", -1, ("adv",), "autoattack_images"),
        ("autoattack", 10**6, ("adv",), "autoattack_images"),
        ("autoattack", 2.5, ("adv",), "autoattack_images"),
        ("autoattack", 0, ("std",), 'add "adv" to regimes'),
    ],
)
def test_bad_eval_attack_or_image_count_is_one_sentence(eval_attack, images, regimes, message):
    with pytest.raises(InputError, match=message) as err:
        AutoAttackCheck.create(QUICK, quick_cells(regimes), eval_attack, images)
    assert str(err.value).count(". ") == 0 and "\n" not in str(err.value)


def test_the_check_resolves_its_image_count_and_is_part_of_a_notebooks_plan(session):
    cells = quick_cells(("std", "adv"))
    assert AutoAttackCheck.create(QUICK, cells, "pgd20", 0) is None
    check = AutoAttackCheck.create(QUICK, cells, "autoattack", 0)
    assert check.images == QUICK.autoattack_images
    assert AutoAttackCheck.create(QUICK, cells, "autoattack", 7).images == 7
    given = dict(quick=True, ticket="imp", sparsity=0.36, eval_attack="autoattack", autoattack_images=7)
    planned = transfer.plan(session, Parameters.of("05_data_limited", given))
    assert planned.check == AutoAttackCheck(7)


def check_record(ticket, seed, kind, value, images=1000, checkpoint="best_ra"):
    name = {"pgd": PGD20_EVAL.describe(), "auto": AutoAttack(8).describe()}.get(kind, autoattack.WORST_CASE + "both")
    level, sparsity = (0, 0.0) if ticket == "dense" else (10, 0.8926)
    attack = f"{name}, fp32, on the first {images:,} test images"
    return record(
        ticket=ticket,
        level=level,
        sparsity=sparsity,
        metric="RA",
        checkpoint=checkpoint,
        seed=seed,
        value=value,
        attack=attack,
        run_id=f"transfer/{ticket}/seed_{seed}",
    )


def test_side_by_side_averages_seeds_and_flags_a_gap_of_more_than_two_points():
    rows = [
        # dense: PGD 50, 52 → 51; AutoAttack 49, 50 → 49.5; gap 1.5, not flagged
        check_record("dense", 1, "pgd", 50.0),
        check_record("dense", 2, "pgd", 52.0),
        check_record("dense", 1, "auto", 49.0),
        check_record("dense", 2, "auto", 50.0),
        # ticket: PGD 48; AutoAttack 45.5; gap 2.5, flagged; its best_sa checkpoint is left out
        check_record("imp", 1, "pgd", 48.0),
        check_record("imp", 1, "auto", 45.5),
        check_record("imp", 1, "pgd", 40.0, checkpoint="best_sa"),
        check_record("imp", 1, "auto", 30.0, checkpoint="best_sa"),
    ]
    table = side_by_side(results.to_frame(rows), checkpoint="best_ra").set_index("ticket")
    assert table.loc["dense", "RA_pgd"] == 51 and table.loc["dense", "RA_autoattack"] == 49.5
    assert table.loc["dense", "gap"] == 1.5 and not table.loc["dense", "flag"]
    assert table.loc["imp", "gap"] == 2.5 and table.loc["imp", "flag"]
    assert list(table.seeds) == [2, 1] and set(table.images) == {1000}
    assert len(side_by_side(results.to_frame(rows))) == 3  # every checkpoint when none is named
    assert side_by_side(results.to_frame([])).empty
    # a gap of exactly two points is not more than two
    exact = [check_record("imp", 1, "pgd", 48.0), check_record("imp", 1, "auto", 46.0)]
    assert not side_by_side(results.to_frame(exact)).flag.iloc[0]
    # the worst case of both attacks per image, where it was measured, is a column of its own
    both = side_by_side(results.to_frame([*exact, check_record("imp", 1, "both", 45.0)]))
    assert both.RA_both.iloc[0] == 45.0 and both.RA_pgd.iloc[0] == 48.0 and both.RA_autoattack.iloc[0] == 46.0
    assert "RA_both" not in side_by_side(results.to_frame(exact))


def test_the_evaluation_seed_drives_the_attacks(model, batch):
    x, y = batch
    attack = AutoAttack(eps_255=8, iterations=5, square_queries=20)
    first = attack(model, x, y, torch.Generator().manual_seed(EVAL_SEED))
    again = attack(model, x, y, torch.Generator().manual_seed(EVAL_SEED))
    assert torch.equal(first, again)


def test_a_missing_torchattacks_is_one_sentence(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name == "torchattacks":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(autoattack.MissingInputError, match="pip install --no-deps torchattacks"):
        AutoAttackCheck.create(QUICK, quick_cells(), "autoattack", 0)


def test_a_check_measured_with_other_attacks_is_not_done(tmp_path):
    (cell,) = quick_cells()
    check = AutoAttackCheck(images=20)
    assert not check.done(cell, tmp_path)

    def write(names):
        rows = [
            {**check_record("imp", 1, "pgd", 40.0 + k, images=20, checkpoint=checkpoint), "attack": name}
            for k, name in enumerate(names)
            for checkpoint in cell.recipe.keep
        ]
        results.write_records(tmp_path, rows, check.file(tmp_path))

    today = check.attack_names(cell)
    # written before Square's schedule was the reference's and before the worst case per image was recorded
    write([today[0], today[1].replace(" (Square p_init 0.8, schedule not rescaled)", "")])
    assert not check.done(cell, tmp_path)
    write(today)
    assert check.done(cell, tmp_path)
    check.file(tmp_path).write_text("")  # damaged: measured again
    assert not check.done(cell, tmp_path)
    std = TransferConfig.create(QUICK, "std", dict(pretraining="adv", dataset="cifar10", ticket="dense", sparsity=0))
    assert check.done(std, tmp_path / "elsewhere")  # standard transfer has no check to do
