import threading

import pytest
import torch

from dwlt_utils import cells, results
from dwlt_utils.checkpoints import save_backbone_state
from dwlt_utils.config import config_hash
from dwlt_utils.errors import InputError, MissingInputError
from dwlt_utils.models import SmallResNet
from dwlt_utils.profiles import QUICK


@pytest.fixture()
def paths(tmp_path):
    return cells.Paths.create(str(tmp_path / "data"), str(tmp_path / "runs"), str(tmp_path / "weights"))


def quick_cell(**overrides):
    args = dict(quick=True, pretraining="adv", dataset="cifar10", regime="std", ticket="omp", sparsity=0.36)
    return cells.TransferConfig.create(**{**args, **overrides})


def plant_source(paths, pretraining="adv"):
    torch.manual_seed(0)
    eps = cells.source_eps(pretraining, 4)
    save_backbone_state(cells.source_path(paths, QUICK, pretraining, eps), SmallResNet(10).state_dict(), {"profile": "quick"})


def test_cells_resolve_defaults_into_their_identity():
    auto = cells.TransferConfig.create(quick=True, pretraining="adv", dataset="cifar10", regime="adv", ticket="imp",
                                       sparsity=0.9141)
    explicit = cells.TransferConfig.create(quick=True, pretraining="adv", dataset="cifar10", regime="adv",
                                           ticket="imp", sparsity=0.9141, imp="a-imp", imp_epochs=1)
    assert auto == explicit and config_hash(auto) == config_hash(explicit)
    assert auto.level == 11 and auto.imp.variant == "a-imp" and auto.deviations() == []
    assert config_hash(auto) != config_hash(auto.dense())
    assert cells.TransferConfig.create(quick=True, pretraining="standard", dataset="cifar10", regime="std",
                                       ticket="imp", sparsity=0.2).imp.variant == "s-imp"


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
        (dict(epochs=-1), "epochs must be an integer"),
        (dict(regime="both"), "Unknown regime"),
    ],
)
def test_bad_cells_are_one_sentence(overrides, message):
    with pytest.raises(InputError, match=message) as err:
        quick_cell(**overrides)
    assert "\n" not in str(err.value)


def test_missing_inputs_are_named_together_with_how_to_provide_them(paths):
    cell = quick_cell(ticket="imp", sparsity=0.9141)
    with pytest.raises(MissingInputError) as err:
        cells.require_inputs(cell, paths)
    text = str(err.value)
    assert text.startswith("Cannot run this cell: the dense adv_linf4 source is not in")
    assert "01_load_pretrained.ipynb with -p quick True" in text
    assert "run notebooks/02_imp.ipynb with -p pretraining adv -p levels 11 -p quick True first" in text
    assert "\n" not in text
    plant_source(paths)
    assert cells.missing_inputs(quick_cell(), paths) == []  # digits needs no files; OMP needs no ladder
    assert not (paths.run_root / "transfer").exists()


def test_a_cell_trains_once_and_its_records_say_what_it_is(paths):
    plant_source(paths)
    cell = quick_cell(epochs=1)
    first = cells.run_transfer(cell, paths, seed=1, notebook="03_std_transfer", progress=False)
    assert list(first.metric) == ["SA"] and list(first.checkpoint) == ["best_sa"]
    row = first.iloc[0]
    assert (row.profile, row.dataset, row.stands_for, row.ticket, row.level) == ("quick", "digits", "cifar10", "omp", 2)
    assert row.sparsity == pytest.approx(0.36) and row.deviations == "1 epochs instead of 6"
    assert row.sparsity_denominator.startswith("all ") and "12 backbone Conv2d layers" in row.sparsity_denominator
    run = paths.run_root / row.run_id
    assert {"config.json", "records.csv", "metrics.csv", "resume.pt", "best_sa.pt", "train_indices.json"} <= {
        p.name for p in run.iterdir()}
    again = cells.run_transfer(cell, paths, seed=1, notebook="03_std_transfer", progress=False)
    assert again.timestamp.tolist() == first.timestamp.tolist()  # read back, not retrained
    assert len(results.load(paths.run_root)) == 1


def test_parallel_requests_for_one_cell_train_it_once(paths, monkeypatch):
    plant_source(paths)
    trained = []
    real = cells._train_and_test
    monkeypatch.setattr(cells, "_train_and_test", lambda *a, **k: trained.append(1) or real(*a, **k))
    cell = quick_cell(epochs=1)
    threads = [threading.Thread(target=cells.run_transfer, args=(cell, paths),
                                kwargs=dict(seed=2, notebook="03_std_transfer", progress=False)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(trained) == 1 and len(results.load(paths.run_root)) == 1


def test_one_shot_tickets_are_saved_and_reused(paths):
    plant_source(paths)
    first = cells.one_shot_ticket(QUICK, "adv", 4, "random", 0.5, paths, seed=3)
    again = cells.one_shot_ticket(QUICK, "adv", 4, "random", 0.5, paths, seed=3)
    other = cells.one_shot_ticket(QUICK, "adv", 4, "random", 0.5, paths, seed=4)
    assert first == again and first != other
    assert abs(first.sparsity - 0.5) * first.total <= 0.5


def test_imp_inputs_and_sources_are_checked(paths):
    ladder = cells.ImpConfig.create(quick=True, pretraining="adv")
    with pytest.raises(MissingInputError, match="Cannot run this ladder: the dense adv_linf4 source"):
        cells.check_imp_inputs(ladder, paths, levels=3, imagenet_root="", one_shot_sparsities=[])
    paper = cells.ImpConfig.create(quick=False, pretraining="standard")
    with pytest.raises(MissingInputError, match="imagenet_root"):
        cells.check_imp_inputs(paper, paths, levels=3, imagenet_root="", one_shot_sparsities=[])
    with pytest.raises(InputError, match="one-shot sparsity"):
        cells.check_imp_inputs(ladder, paths, levels=3, imagenet_root="", one_shot_sparsities=[1.0])
    assert cells.check_sources(["adv", "standard"], 4, quick=False) == ["adv", "standard"]
    with pytest.raises(InputError, match="accepted"):
        cells.check_sources(["adv"], 3, quick=False)  # no ℓ∞ 3/255 checkpoint is published


def test_relative_folders_mean_the_same_from_jupyterlab_and_from_papermill(monkeypatch, tmp_path):
    from pathlib import Path

    from dwlt_utils import notebook

    repo = Path(notebook.__file__).resolve().parent.parent
    monkeypatch.chdir(repo / "notebooks")  # where JupyterLab starts a notebook's kernel
    from_lab = notebook.start(quick=True, seed=1, device="cpu", data_root="data", run_root="runs").paths
    assert from_lab.run_root == repo / "runs" and from_lab.data_root == repo / "data"
    monkeypatch.chdir(tmp_path)  # anywhere else: the current directory
    elsewhere = notebook.start(quick=True, seed=1, device="cpu", data_root="data", run_root="/abs/runs").paths
    assert elsewhere.data_root == tmp_path / "data" and elsewhere.run_root == Path("/abs/runs")
    with pytest.raises(InputError, match="seed"):
        notebook.start(quick=True, seed=-1, device="cpu", data_root="data", run_root="runs")


def test_a_published_checkpoint_is_converted_once_and_checked_against_its_hash(paths, tmp_path):
    from PIL import Image
    from torchvision.models import resnet50

    from dwlt_utils.checkpoints import get_source

    source = get_source("standard")
    with pytest.raises(MissingInputError, match=f"{source.filename} are not in .*download is off.*{source.url}"):
        cells.prepare_paper_source("standard", 4, paths, download=False)
    with pytest.raises(MissingInputError, match="no direct download link"):
        cells.prepare_paper_source("fast_adv", 4, paths, download=True)
    paths.weights_dir.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(resnet50().state_dict(), paths.weights_dir / source.filename)  # not the published file
    with pytest.warns(UserWarning, match="differs from the published"):
        meta = cells.prepare_paper_source("standard", 4, paths, download=False)
    assert meta["layout"] == "torchvision" and meta["registry"]["published_sha256"] == source.sha256
    assert cells.source_summary("standard", meta)["SHA-256 matches the published one"] is False
    assert cells.prepare_paper_source("standard", 4, paths, download=False)["sha256"] == meta["sha256"]  # read back
    # ImageNet top-1 on a class-stratified subset of a (tiny) validation folder
    for label in ("n01", "n02"):
        folder = tmp_path / "imagenet" / "val" / label
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 48), (60 * i, 100, 200)).save(folder / f"{i}.JPEG")
    top1 = cells.imagenet_top1(cells.source_path(paths, cells.PROFILES["paper"], "standard", 0),
                               tmp_path / "imagenet", 4, device="cpu")
    assert top1 in (0.0, 25.0, 50.0, 75.0, 100.0)
