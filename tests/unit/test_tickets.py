import os
from dataclasses import replace

import pytest

from dwlt_utils import paths, tickets, train
from dwlt_utils.batches import loader_workers
from dwlt_utils.engine import generator_for
from dwlt_utils.errors import FileFormatError, InputError, MissingInputError
from dwlt_utils.notebook import Parameters
from dwlt_utils.profiles import PAPER, QUICK


def test_one_shot_tickets_are_saved_and_reused(roots, plant_source):
    plant_source()
    first = tickets.one_shot_ticket(QUICK, "adv", 4, "random", 0.5, roots, seed=3)
    again = tickets.one_shot_ticket(QUICK, "adv", 4, "random", 0.5, roots, seed=3)
    other = tickets.one_shot_ticket(QUICK, "adv", 4, "random", 0.5, roots, seed=4)
    assert first == again and first != other
    assert abs(first.sparsity - 0.5) * first.total <= 0.5
    with pytest.raises(InputError, match="Unknown one-shot method 'lottery'; accepted: magnitude, random"):
        tickets.one_shot_ticket(QUICK, "adv", 4, "lottery", 0.5, roots, seed=3)


def ladder_plan(session, **given):
    return tickets.plan(session, Parameters.of("02_imp", {"quick": True, **given}))


def test_notebook_02s_parameters_make_one_ladder_and_its_inputs_are_found_where_they_are_read(session):
    planned = ladder_plan(session, pretraining="adv", nproc_per_node=2, nnodes=2, rdzv_endpoint="host:29500")
    assert planned.ladder.processes == planned.launch.world == 4 and planned.levels == QUICK.levels
    assert planned.ladder == tickets.ImpConfig.create(profile=QUICK, pretraining="adv", processes=4)
    with pytest.raises(InputError, match="one-shot sparsity"):
        ladder_plan(session, one_shot_sparsities=[1.0])
    with pytest.raises(InputError, match="rdzv_endpoint"):
        ladder_plan(session, nnodes=2)
    with pytest.raises(MissingInputError, match="^The dense adv_linf4 source is not in"):
        tickets.run_imp_ladder(ladder_plan(session, pretraining="adv").ladder, session, levels=3)
    assert not (session.roots.run_root / "imp").exists()  # refused before anything of the ladder is written


def test_each_ladder_process_reads_with_its_share_of_the_cores_unless_told(session, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert [loader_workers(n) for n in (1, 2, 8, 32)] == [15, 7, 1, 1]
    given = []

    class Stop(Exception):
        pass

    def trainer(config, roots, precision, seed, imagenet_root, workers, progress):
        given.append(workers)
        raise Stop

    monkeypatch.setattr(tickets, "LevelTrainer", trainer)
    for processes, workers in ((1, -1), (4, -1), (4, 3)):
        ladder = tickets.ImpConfig.create(profile=QUICK, pretraining="adv", processes=processes)
        with pytest.raises(Stop):
            tickets.run_imp_ladder(ladder, session, levels=3, workers=workers)
    assert given == [15, 3, 3]  # 16 cores: 15 for one process, 16 // 4 - 1 for each of four, or as given
    with pytest.raises(InputError, match=r"workers must be an integer in \[-1, 1,024\]; got -2"):
        tickets.run_imp_ladder(ladder, session, levels=3, workers=-2)


@pytest.mark.usefixtures("fashion_mnist")  # the ladder trains on the quick source data
def test_a_ladder_is_computed_once_and_exported_in_the_official_layout(session, roots, plant_source, capsys):
    plant_source()
    ladder = tickets.ImpConfig.create(profile=QUICK, pretraining="adv", epochs_per_level=1, source_fraction=0.05)
    assert ladder.deviations() == ["IMP on 0.05 of the source data"]
    masks = tickets.run_imp_ladder(ladder, session, levels=2)
    assert [round(m.sparsity, 2) for m in masks] == [0.2, 0.36]
    assert capsys.readouterr().out.startswith("IMP level 1 → 2: epoch 1 of 1 in ")
    with pytest.raises(MissingInputError) as hint:
        tickets.imp_ticket(ladder, roots, session.seed, 3)
    command = str(hint.value).split("`")[1]
    assert command.startswith(f"mkdir -p {roots.run_root}/executed/02_imp && papermill notebooks/02_imp.ipynb ")
    flags = ["-p quick True", "-p precision fp32", f"-p run_root {roots.run_root}", "-p pretraining adv"]
    flags += ["-p levels 3", "-p source_fraction 0.05"]
    assert all(flag in command for flag in flags) and command.count(" -p ") == len(flags) + 2  # + data_root, mkdir
    assert tickets.imp_ticket(ladder, roots, session.seed, 2) == masks[1]
    files = tickets.export_official(ladder, roots, session.seed, masks)
    assert [f.parent for f in files] == [roots.imp_level(ladder, session.seed, k) for k in (1, 2)]
    assert tickets.run_imp_ladder(ladder, session, levels=2) == masks and capsys.readouterr().out == ""


@pytest.mark.usefixtures("fashion_mnist")  # the ladder trains on the quick source data
def test_degenerate_ladders_and_damaged_levels_are_one_sentence(session, roots, plant_source):
    with pytest.raises(InputError, match="the smallest source_fraction that trains is 0.0007"):
        tickets.ImpConfig.create(profile=QUICK, pretraining="adv", source_fraction=0.0001)
    with pytest.raises(InputError, match="ε = 4/255 only"):
        tickets.ImpConfig.create(profile=QUICK, pretraining="adv", source_eps_255=8)
    plant_source()
    ladder = tickets.ImpConfig.create(profile=QUICK, pretraining="adv", source_fraction=0.01)
    tickets.run_imp_ladder(ladder, session, levels=2)
    level = roots.imp_level(ladder, session.seed, 2)
    paths.mask_file(level).write_bytes(b"\x80garbage")
    with pytest.raises(FileFormatError) as err:
        tickets.imp_ticket(ladder, roots, session.seed, 2)
    assert str(err.value).startswith(str(paths.mask_file(level)))
    assert str(err.value).endswith(f"delete {level} and re-run notebooks/02_imp.ipynb, which makes it again.")


def test_a_ladders_precision_and_decoder_are_part_of_its_identity(roots, session):
    base = tickets.ImpConfig.create(profile=PAPER, pretraining="standard")
    assert (base.precision, base.decoder) == ("fp32", "pil")  # "auto" decodes as the reference until a GPU says
    others = [
        tickets.ImpConfig.create(profile=PAPER, pretraining="standard", precision="bf16"),
        tickets.ImpConfig.create(profile=PAPER, pretraining="standard", decoder="nvjpeg"),
        tickets.ImpConfig.create(profile=PAPER, pretraining="standard", decoder="mixed"),
        tickets.ImpConfig.create(profile=PAPER, pretraining="standard", decoder="nvimgcodec"),
    ]
    directories = {roots.imp_ladder(c, 1) for c in [base, *others]}
    assert len(directories) == 5
    assert any("nvJPEG" in d for d in others[1].deviations()) and not others[2].deviations()
    assert any("nvImageCodec, not yet shown to give PIL's pixels on a GPU" in d for d in others[3].deviations())
    assert "-p precision fp32 -p decoder nvjpeg" in others[1].notebook_parameters(1).command()
    wide = tickets.ImpConfig.create(profile=PAPER, pretraining="standard", processes=32).notebook_parameters(1)
    assert (wide["nproc_per_node"], wide["nnodes"]) == (8, 4)
    # the quick profile reads arrays: its decoder is no part of what it computes
    quick = tickets.ImpConfig.create(profile=QUICK, pretraining="adv", decoder="nvjpeg")
    assert quick == tickets.ImpConfig.create(profile=QUICK, pretraining="adv")
    with pytest.raises(InputError, match="Unknown decoder 'gpu'"):
        tickets.ImpConfig.create(profile=PAPER, pretraining="standard", decoder="gpu")
    with pytest.raises(InputError, match="precision of the ladder"):
        tickets.ImpConfig.create(profile=PAPER, pretraining="standard", precision="auto")
    bf16 = tickets.ImpConfig.create(profile=QUICK, pretraining="adv", precision="bf16")
    with pytest.raises(InputError, match="computes in bf16, but the notebook runs in fp32"):
        tickets.run_imp_ladder(bf16, session, levels=2)


@pytest.mark.usefixtures("fashion_mnist")
def test_every_level_draws_its_data_as_its_epochs_of_the_whole_ladder(session, plant_source, monkeypatch):
    """The official code calls set_epoch(epoch) with the ladder's global epoch: level 2 → 3 must not repeat
    the shuffles and crops of level 1 → 2."""
    plant_source()
    keys = []

    def recording(device, *seeds):
        keys.append(seeds)
        return generator_for(device, *seeds)

    monkeypatch.setattr(train, "generator_for", recording)
    ladder = tickets.ImpConfig.create(profile=QUICK, pretraining="adv", epochs_per_level=2, source_fraction=0.05)
    assert ladder.data_order == "global" and ladder.epoch_offset(3) == 4
    tickets.run_imp_ladder(ladder, session, levels=4)
    epochs = [key for key in keys if len(key) == 2]  # fit's per-epoch generators: (seed, epoch)
    assert epochs == [(session.seed, epoch) for epoch in range(6)]
    # a ladder computed before, with every level drawing level 1's, keeps its own identity and order
    old = replace(ladder, data_order="level")
    assert session.roots.imp_ladder(old, 1) != session.roots.imp_ladder(ladder, 1) and old.epoch_offset(3) == 0
