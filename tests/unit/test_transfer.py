import dataclasses
import threading

import pytest

from dwlt_utils import notebook, paths, plotting, report, results, transfer
from dwlt_utils.autoattack import AutoAttack
from dwlt_utils.config import config_hash
from dwlt_utils.corruptions import STAND_IN_CORRUPTIONS, STAND_IN_WORDS
from dwlt_utils.errors import InputError, MissingInputError
from dwlt_utils.notebook import Parameters
from dwlt_utils.profiles import PAPER, QUICK
from dwlt_utils.vocabulary import STD_BUDGET_DEVIATION


def quick_cell(regime="std", **overrides):
    given = dict(pretraining="adv", dataset="cifar10", ticket="omp", sparsity=0.36)
    return transfer.TransferConfig.create(QUICK, regime, {**given, **overrides})


def test_cells_resolve_defaults_into_their_identity():
    auto = quick_cell(regime="adv", ticket="imp", sparsity=0.9141)
    explicit = quick_cell(regime="adv", ticket="imp", sparsity=0.9141, imp_variant="a-imp", imp_epochs=1)
    assert auto == explicit and config_hash(auto) == config_hash(explicit)
    assert auto.level == 11 and auto.imp.variant == "a-imp" and auto.deviations() == []
    assert config_hash(auto) != config_hash(auto.dense())
    assert quick_cell(pretraining="standard", ticket="imp", sparsity=0.2).imp.variant == "s-imp"
    assert quick_cell(data_fraction=0.0017).data_fraction == 0.0017  # the smallest budget that trains
    assert quick_cell().sparsity == 0.36 and quick_cell(sparsity=0.9141).sparsity == 0.9141  # as printed


def test_deviations_say_how_a_cell_departs_from_the_protocol():
    cell = quick_cell(regime="adv", ticket="imp", epochs=3, eps_255=4, imp_epochs=2)
    assert cell.deviations() == [
        "3 epochs instead of 6",
        "training attack linf PGD-10 eps=4/255 alpha=1/255, random start, 1 restart, cross-entropy, BN train mode "
        "instead of linf PGD-10 eps=8/255 alpha=2/255, random start, 1 restart, cross-entropy, BN train mode",
        "evaluation attack linf PGD-20 eps=4/255 alpha=1/255, random start, 1 restart, cross-entropy, BN eval mode "
        "instead of linf PGD-20 eps=8/255 alpha=2/255, random start, 1 restart, cross-entropy, BN eval mode",
        "IMP 2 epochs per level instead of 1",
    ]


def test_data_limited_standard_transfer_trains_on_the_budget_or_as_the_official_code_on_all_the_data():
    budget = quick_cell(data_fraction=0.5)
    assert budget.data_fraction == 0.5 and budget.deviations() == [STD_BUDGET_DEVIATION]
    official = quick_cell(data_fraction=0.5, subset="random", std_data="all")
    assert official == quick_cell() and official.deviations() == []  # the full-data cell itself
    adv = quick_cell(regime="adv", data_fraction=0.5, std_data="all")
    assert adv.data_fraction == 0.5 and adv.deviations() == []  # adversarial transfer keeps its budget


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(sparsity=0.5), "not on the IMP ladder"),
        (dict(dataset="cifar100"), "stand-ins only for ImageNet"),
        (dict(pretraining="moco"), "Unknown pre-training"),
        (dict(data_fraction=0.0), "data_fraction"),
        (dict(eps_255="8/255"), "eps_255 must be a number"),
        (dict(ticket="dense", sparsity=0.36), "dense cell has sparsity 0"),
        (dict(ticket="imp", sparsity=0.0), "dense model"),
        (dict(subset="balanced"), "Unknown subset"),
        (dict(std_data="half"), "Unknown std_data"),
        (dict(epochs=-1), "epochs must be an integer"),
        (dict(regime="both"), "Unknown regime"),
        (
            dict(data_fraction=0.001),
            r"data_fraction 0.001 of the 1,197 digits training images is 1 image, too few for one training step "
            r"\(BatchNorm needs two images in a batch\); the smallest data_fraction that trains is 0.0017\.",
        ),
        (dict(source_eps_255=3), "quick profile pre-trains its robust sources at ε = 4/255 only"),
    ],
)
def test_bad_cells_are_one_sentence(overrides, message):
    with pytest.raises(InputError, match=message) as err:
        quick_cell(**overrides)
    assert "\n" not in str(err.value)


def test_missing_inputs_are_named_together_with_how_to_provide_them(roots, plant_source):
    cell = quick_cell(ticket="imp", sparsity=0.9141)
    with pytest.raises(MissingInputError) as err:
        transfer.Inputs(roots).require([cell.dense(), cell])
    text = str(err.value)
    assert text.startswith("Cannot run this cell: the dense adv_linf4 source is not in")
    assert "01_load_pretrained.ipynb with -p quick True" in text and text.count("adv_linf4 source") == 1
    assert "&& papermill notebooks/02_imp.ipynb" in text and "-p levels 11" in text
    assert "\n" not in text
    plant_source()
    transfer.Inputs(roots).require([quick_cell()])  # digits needs no files; OMP needs no ladder
    assert not (roots.run_root / "transfer").exists()


def cell_parameters(notebook="05_data_limited", **given):
    base = dict(quick=True, pretraining="adv", dataset="cifar10", ticket="omp", sparsity=0.36)
    return Parameters.of(notebook, {**base, **given})


def test_a_plan_is_one_cell_per_regime_with_nothing_read(session):
    planned = transfer.plan(session, cell_parameters(regimes=["std", "adv", "std"]))
    assert [cell.regime for cell in planned.cells] == ["std", "adv"] and planned.check is None
    assert [run.ticket for run, _ in planned.runs] == ["dense", "omp", "dense", "omp"]
    assert "deviations from the protocol: none" in planned.describe()
    assert not planned.done()  # its inputs are not there, and a plan never looks for them
    with pytest.raises(InputError, match="regimes is a non-empty list"):
        transfer.plan(session, cell_parameters(regimes=[]))
    with pytest.raises(InputError, match="dense_baseline is True or False"):
        transfer.plan(session, cell_parameters(dense_baseline="yes"))


@pytest.mark.parametrize(
    ("notebook", "given"),
    [
        ("03_std_transfer", {}),
        ("03_std_transfer", dict(ticket="dense", sparsity=0, data_fraction=0.25, subset="random", epochs=2)),
        ("04_adv_transfer", dict(ticket="imp", sparsity=0.9141, eps_255=4, train_steps=3, test_images=5)),
        ("04_adv_transfer", dict(ticket="random", ticket_seed=3, imp_epochs=2, val_images=9, seed=2)),
        ("05_data_limited", dict(ticket="imp", sparsity=0.36, imp_epochs=2, imp_precision="bf16", std_data="all")),
        ("05_data_limited", dict(pretraining="standard", ticket="imp", sparsity=0.2, regimes=["adv"], eval_steps=5)),
    ],
)
def test_every_run_knows_the_notebook_parameters_that_make_it(session, notebook, given):
    """`notebook_parameters` is `create` read backwards: the parameters it gives make the same run."""
    planned = transfer.plan(session, cell_parameters(notebook, **given))
    for config, directory in planned.runs:
        parameters = config.notebook_parameters(notebook, session.seed, session.precision.name)
        again = transfer.plan(session, parameters)
        assert [d for _, d in again.runs if _ == config] == [directory]
        assert all(name in cell_parameters(notebook) for name in parameters.changed())


def test_a_plans_inputs_are_each_read_once(session, plant_source, monkeypatch):
    """θ_p is read (and its hash verified) once for the cell and its dense baseline, the ticket made once."""
    plant_source()
    reads = []
    loading = transfer.sources.load
    monkeypatch.setattr(transfer.sources, "load", lambda *a: reads.append(a[1:3]) or loading(*a))
    planned = transfer.plan(session, cell_parameters("03_std_transfer", epochs=1))
    records = transfer.run_plan(planned, session)
    assert reads == [("adv", 4)] and set(records.ticket) == {"dense", "omp"}
    assert transfer.run_plan(planned, session).timestamp.tolist() == records.timestamp.tolist()
    assert reads == [("adv", 4)]  # finished runs are read back: no input is looked for


def test_the_autoattack_check_reads_the_plans_inputs_again_never(session, plant_source, monkeypatch):
    plant_source()
    reads = []
    loading = transfer.sources.load
    monkeypatch.setattr(transfer.sources, "load", lambda *a: reads.append(a[1:3]) or loading(*a))
    # The attack itself is tested in test_autoattack; this one keeps the images, which is quick.
    monkeypatch.setattr(AutoAttack, "__call__", lambda self, model, x, *_: x)
    given = dict(ticket="dense", sparsity=0, epochs=1, eval_attack="autoattack", autoattack_images=4)
    planned = transfer.plan(session, cell_parameters("04_adv_transfer", **given))
    transfer.run_plan(planned, session)
    checked = transfer.run_check(planned, session)
    assert reads == [("adv", 4)] and set(checked.checkpoint) == {"best_sa", "best_ra"}


def test_corrupted_test_sets_are_records_of_their_own_measured_once(session, plant_source):
    plant_source()
    given = dict(ticket="dense", sparsity=0, epochs=1, eval_corruptions=True)
    planned = transfer.plan(session, cell_parameters("03_std_transfer", **given))
    records = transfer.run_plan(planned, session)
    assert not planned.done()  # trained, not yet tested on corrupted images
    corrupted = transfer.run_corruptions(planned, session)
    assert planned.done() and set(records.severity) == {0} and set(records.corruption) == {""}
    assert set(corrupted.corruption) == set(STAND_IN_CORRUPTIONS) and set(corrupted.severity) == {1, 2, 3, 4, 5}
    assert set(corrupted.metric) == {"SA"} and len(corrupted) == 4 * 5 * len(planned.cells[0].recipe.keep)
    assert (corrupted.deviations.str.endswith(STAND_IN_WORDS)).all()
    assert transfer.run_corruptions(planned, session).timestamp.tolist() == corrupted.timestamp.tolist()
    table = transfer.corruption_table(records, corrupted)
    assert list(table.columns.get_level_values("severity")) == [0, 1, 2, 3, 4, 5]

    accuracy = report.corruption_accuracy(records, corrupted, adv_checkpoint="best_ra").set_index("severity")
    clean = records[records.checkpoint == "best_sa"].value.iloc[0]
    assert accuracy.value[0] == clean and set(accuracy.deviations) == set(records.deviations)
    worst = corrupted[(corrupted.severity == 5) & (corrupted.checkpoint == "best_sa")].value.mean()
    assert accuracy.value[5] == pytest.approx(worst)
    figure = plotting.corruption_figure(accuracy.reset_index())
    assert [line.get_linestyle() for line in figure.axes[0].lines] == ["-", "--", ":"]


def test_corrupted_test_sets_are_asked_of_cifar10_cells_only_and_their_files_named(session, roots, tmp_path):
    paper_session, _ = notebook.start("01_load_pretrained", dict(device="cpu", run_root=str(tmp_path / "paper")))
    with pytest.raises(InputError, match=r"^eval_corruptions tests on CIFAR-10-C.*; dataset is svhn\.$"):
        transfer.plan(paper_session, cell_parameters(dataset="svhn", eval_corruptions=True, quick=False))
    with pytest.raises(InputError, match=r"^eval_corruptions is True or False; got 1\.$"):
        transfer.plan(session, cell_parameters(eval_corruptions=1))
    paper = transfer.TransferConfig.create(
        PAPER, "adv", dict(pretraining="adv", dataset="cifar10", ticket="dense", sparsity=0)
    )
    with pytest.raises(MissingInputError, match="CIFAR-10-C") as err:
        transfer.Inputs(roots).corrupted(paper)
    assert "\n" not in str(err.value) and "zenodo.org/record/2535967" in str(err.value)


def test_a_cell_trains_once_and_its_records_say_what_it_is(session, roots, plant_source, capsys):
    plant_source()
    cell = quick_cell(epochs=1)
    first = transfer.run_transfer(cell, session, notebook="03_std_transfer")
    assert list(first.metric) == ["SA"] and list(first.checkpoint) == ["best_sa"]
    row = first.iloc[0]
    assert (row.profile, row.dataset, row.stands_for, row.ticket, row.level) == ("quick", "digits", "cifar10", "omp", 2)
    assert row.sparsity == pytest.approx(0.36) and row.deviations == "1 epoch instead of 6"
    assert row.sparsity_denominator.startswith("all ") and "12 backbone Conv2d layers" in row.sparsity_denominator
    run = roots.run_root / row.run_id
    assert run == roots.transfer_cell(cell, session.seed)
    for made in (
        paths.config_file,
        paths.records_file,
        paths.metrics_file,
        paths.resume_file,
        paths.train_indices_file,
    ):
        assert made(run).is_file()
    assert paths.checkpoint_file(run, "best_sa").is_file()
    # Headless, the run says that it finished in one line, and draws no progress bar
    printed = capsys.readouterr()
    assert printed.out.splitlines()[-1].startswith("std transfer, omp ticket at 36.00% (level 2): epoch 1 of 1 in ")
    assert len(printed.out.splitlines()) == 1 and printed.err == ""
    again = transfer.run_transfer(cell, session, notebook="03_std_transfer")
    assert again.timestamp.tolist() == first.timestamp.tolist()  # read back, not retrained
    assert len(results.load(roots.run_root)) == 1


def test_parallel_requests_for_one_cell_train_it_once(session, roots, plant_source, monkeypatch):
    plant_source()
    session = dataclasses.replace(session, seed=2)
    trained = []
    real = transfer._train_and_test
    monkeypatch.setattr(transfer, "_train_and_test", lambda *a, **k: trained.append(1) or real(*a, **k))
    cell = quick_cell(epochs=1)
    threads = [
        threading.Thread(target=transfer.run_transfer, args=(cell, session), kwargs=dict(notebook="03_std_transfer"))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(trained) == 1 and len(results.load(roots.run_root)) == 1


def test_a_cell_whose_records_are_incomplete_is_measured_again(session, roots, plant_source, capsys):
    plant_source()
    cell = quick_cell(epochs=1)
    first = transfer.run_transfer(cell, session, notebook="03_std_transfer")
    run = roots.transfer_cell(cell, session.seed)
    header = paths.records_file(run).read_text().splitlines()[0]
    paths.records_file(run).write_text(header + "\n")  # cut to its header: the result is missing
    capsys.readouterr()
    again = transfer.run_transfer(cell, session, notebook="03_std_transfer")
    printed = capsys.readouterr().out
    assert printed == f"{paths.records_file(run)} holds 0 of the cell's 1 records. The cell is measured again.\n"
    assert again.value.tolist() == first.value.tolist()  # measured on the kept checkpoint, not retrained
    paths.records_file(run).write_text("not,a,records,file\n1,2,3,4\n")
    assert transfer.run_transfer(cell, session, notebook="03_std_transfer").value.tolist() == first.value.tolist()
    assert "has the wrong columns" in capsys.readouterr().out


def test_caps_on_the_images_evaluated_are_deviations_and_cut_the_splits(session, roots, plant_source, monkeypatch):
    plant_source()
    cell = quick_cell(epochs=1, val_images=5, test_images=7)
    assert cell.deviations()[1:] == [
        "validated on the first 5 validation images only",
        "tested on the first 7 test images only",
    ]
    assert quick_cell(val_images=300) == quick_cell()  # all of digits' 300 validation images: no cap
    assert config_hash(cell) != config_hash(quick_cell(epochs=1))
    for bad, message in (
        (dict(val_images=301), r"val_images must be an integer in \[0, 300\]"),
        (dict(test_images=-1), "test_images"),
    ):
        with pytest.raises(InputError, match=message):
            quick_cell(**bad)
    seen = {}

    class Spy(transfer.ArrayBatches):
        def __init__(self, arrays, *args, **kwargs):
            seen.setdefault("sizes", []).append(len(arrays))
            super().__init__(arrays, *args, **kwargs)

    monkeypatch.setattr(transfer, "ArrayBatches", Spy)
    records = transfer.run_transfer(cell, session, notebook="03_std_transfer")
    assert seen["sizes"] == [1_197, 5, 7]  # train, val, test
    assert records.deviations.iloc[0].endswith("tested on the first 7 test images only")
    assert round(records.value.iloc[0] * 7 / 100, 6).is_integer()
