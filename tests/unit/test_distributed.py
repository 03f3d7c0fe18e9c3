"""IMP on several processes (`distributed`, `imp_worker`, `tickets.run_imp_ladder`) with gloo on the CPU: the
shards, one DDP step against one step on one process, a failing rank in one sentence, and (slow) a quick
ladder on two processes, killed mid-level and run again."""

import os
import signal
import threading
import time
from pathlib import Path

import papermill as pm
import pytest
import torch
import torch.nn.functional as F
from ddp_step import RECIPE, step_inputs

from dwlt_utils import distributed, paths, results, tickets
from dwlt_utils.augment import Transforms
from dwlt_utils.batches import ArrayBatches
from dwlt_utils.data import ImageArrays
from dwlt_utils.distributed import Launch, Ranks
from dwlt_utils.engine import generator_for
from dwlt_utils.errors import DwltError, InputError
from dwlt_utils.profiles import PAPER
from dwlt_utils.pruning import Mask, expected_kept
from dwlt_utils.train import make_optimizer, read_metrics

from executed import execute

TESTS = Path(__file__).resolve().parents[1]


def test_the_shards_of_a_global_batch_are_the_global_batch():
    order = torch.randperm(22, generator=torch.Generator().manual_seed(0))
    shards = [Ranks(r, 2).shard(order) for r in range(2)]
    assert [len(s) for s in shards] == [11, 11]
    for k in range(2):  # batch k of 8 images on one process is the 4 + 4 of batch k on two
        together = torch.cat([s[4 * k : 4 * k + 4] for s in shards])
        assert sorted(together.tolist()) == sorted(order[8 * k : 8 * k + 8].tolist())
    assert len(Ranks(2, 3).shard(order)) == 7  # 22 = 3 × 7 + 1: the tail that does not divide is dropped
    with pytest.raises(InputError, match="A batch of 2048 does not split into 3 equal shares"):
        tickets.ImpConfig.create(profile=PAPER, pretraining="adv", processes=3)


def test_array_batches_on_two_ranks_serve_the_shards_of_one_permutation():
    n = 20
    arrays = ImageArrays(torch.zeros(n, 3, 4, 4, dtype=torch.uint8), torch.arange(n), torch.arange(n))
    batches = ArrayBatches(arrays, Transforms(train="none", size=4, resize=4), torch.device("cpu"))
    single = [y.tolist() for _, y in batches.train(8, generator_for(torch.device("cpu"), 1, 0))]
    ranks = [
        [y.tolist() for _, y in batches.train(8, generator_for(torch.device("cpu"), 1, 0), ranks=Ranks(r, 2))]
        for r in range(2)
    ]
    assert [len(b) for b in ranks[0]] == [4, 4, 2] == [len(b) for b in ranks[1]]
    for k, batch in enumerate(single):
        assert sorted(ranks[0][k] + ranks[1][k]) == sorted(batch)


@pytest.fixture()
def tests_importable(monkeypatch):
    """torchrun's workers import tests/ddp_step.py."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


def ddp_step(tmp_path, kind: str) -> dict[str, torch.Tensor]:
    """The parameters after one DDP step on two gloo processes (tests/ddp_step.py through torchrun)."""
    out = tmp_path / f"{kind}.pt"
    distributed.run_torchrun(Launch(nproc_per_node=2), "ddp_step", [str(out), kind], folder=tmp_path, what="a DDP step")
    return torch.load(out, weights_only=True)


def one_process_step(kind: str, halves: bool) -> dict[str, torch.Tensor]:
    """One step on one process over the whole batch: its statistics over all 8 images, or (`halves`) the
    mean of the two shards' losses, each normalised by BatchNorm over its own 4 images."""
    model, x, y = step_inputs(kind)
    optimizer = make_optimizer(model, RECIPE)
    model.train()
    if halves:
        shards = [Ranks(r, 2).shard(torch.arange(8)) for r in range(2)]
        loss = sum(F.cross_entropy(model(x[s]), y[s]) for s in shards) / 2
    else:
        loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {k: v.detach() for k, v in model.named_parameters()}


def relative_gap(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max()) for k in b)


def test_one_ddp_step_on_two_processes_is_one_step_on_the_whole_batch(tmp_path, tests_importable):
    # Without BatchNorm: the same update as one process taking all 8 images.
    plain = ddp_step(tmp_path, "plain")
    assert relative_gap(plain, one_process_step("plain", halves=False)) < 1e-5
    # With BatchNorm in train mode each rank normalises over its own half, as the official multi-GPU run does:
    # the same update as one process with per-half statistics, and not the one with whole-batch statistics.
    with_bn = ddp_step(tmp_path, "batchnorm")
    assert relative_gap(with_bn, one_process_step("batchnorm", halves=True)) < 1e-5
    assert relative_gap(with_bn, one_process_step("batchnorm", halves=False)) > 1e-3


@pytest.mark.slow  # a torchrun start-up, as the equivalence test has: kept out of the default suite's minutes
def test_a_failing_rank_stops_the_run_with_one_sentence_that_names_it(tmp_path, tests_importable):
    with pytest.raises(
        DwltError, match=r"^a DDP step failed: rank 1 stopped with InputError: rank 1 was told to fail\.$"
    ):
        distributed.run_torchrun(
            Launch(nproc_per_node=2), "ddp_step", [str(tmp_path / "x.pt"), "fail"], folder=tmp_path, what="a DDP step"
        )


def test_several_nodes_need_a_meeting_point():
    with pytest.raises(InputError, match="Several nodes meet at rdzv_endpoint HOST:PORT"):
        Launch(nproc_per_node=8, nnodes=2)
    command = Launch(nproc_per_node=8, nnodes=2, node_rank=1, rdzv_endpoint="node001:29500").command("m", ["a"])
    assert "--rdzv_endpoint=node001:29500" in command and "--node_rank=1" in command and command[-2:] == ["m", "a"]


# ---- a quick ladder on two processes


def worker_of_rank(rank: int) -> int | None:
    """The pid of the imp_worker process of `rank`, read from the environments torchrun gave its workers."""
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"dwlt_utils.imp_worker" in cmdline and f"RANK={rank}".encode() in environ:
            return pid
    return None


@pytest.mark.slow
def test_a_ladder_on_two_processes_resumes_a_level_whose_rank_was_killed(session, roots, plant_source, capsys):
    plant_source()
    config = tickets.ImpConfig.create(profile=session.profile, pretraining="adv", epochs_per_level=3, processes=2)
    ladder = roots.imp_ladder(config, session.seed)
    training = paths.level_training_dir(ladder, 1)
    failure: list[BaseException] = []

    def first_run():
        try:
            tickets.run_imp_ladder(config, session, levels=3)
        except DwltError as err:
            failure.append(err)

    runner = threading.Thread(target=first_run)
    runner.start()
    deadline = time.monotonic() + 240
    while not (paths.metrics_file(training).is_file() and len(read_metrics(training)) >= 1):
        assert time.monotonic() < deadline and runner.is_alive(), "level 1 → 2 never finished an epoch"
        time.sleep(0.1)
    pid = worker_of_rank(1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # mid-level: one epoch of three written
    runner.join(120)
    assert [str(e) for e in failure] == [
        f"IMP level 1 → 2 on 2 processes failed: rank 1 was killed by signal {signal.SIGKILL.value}."
    ]
    assert not Mask.exists(paths.level_dir(ladder, 2))

    capsys.readouterr()
    masks = tickets.run_imp_ladder(config, session, levels=3)  # run again: level 1 → 2 resumes
    out = capsys.readouterr().out
    assert "IMP level 1 → 2: epochs 2-3 of 3" in out or "IMP level 1 → 2: epoch 3 of 3" in out, out
    assert read_metrics(training).epoch.tolist() == [0, 1, 2]  # every epoch once
    # The ladder is exact, and the mask each level's ranks agreed on is the one saved.
    assert [m.kept for m in masks] == [expected_kept(masks[0].total, k) for k in range(1, 4)]
    for level in (2, 3):
        saved = Mask.load(paths.level_dir(ladder, level)).digest()
        assert f"IMP level {level}: the 2 ranks agree on its mask (SHA-256 {saved})" in out
    config_written = paths.config_file(ladder).read_text()
    assert '"processes": 2' in config_written and '"device_batch": 64' in config_written


@pytest.mark.slow
def test_notebooks_keep_a_ladder_of_two_processes_apart(roots, plant_source, tmp_path):
    """Through papermill: 02 on two processes makes a ladder of its own, which 03 uses only when told."""
    plant_source("standard")
    common = dict(quick=True, run_root=str(roots.run_root), data_root=str(roots.data_root), pretraining="standard")
    nb = execute("02_imp", tmp_path, **common, levels=2, one_shot_sparsities=[], nproc_per_node=2)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "on 2 processes (BatchNorm over 64)" in text and "the 2 ranks agree on its mask" in text
    cell = dict(common, sparsity=0.36, epochs=1)
    with pytest.raises(pm.PapermillExecutionError, match="S-IMP of standard \\(quick profile, fp32\\) is not in"):
        execute("03_std_transfer", tmp_path, **cell)  # the ladder of one process does not exist
    execute("03_std_transfer", tmp_path, **cell, imp_processes=2)
    assert sorted(results.load(roots.run_root).ticket) == ["dense", "imp"]
