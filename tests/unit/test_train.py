import copy
import warnings
from dataclasses import replace

import pytest
import torch

from dwlt_utils import paths
from dwlt_utils.attacks import AttackSpec
from dwlt_utils.augment import Transforms
from dwlt_utils.batches import ArrayBatches
from dwlt_utils.data import ImageArrays
from dwlt_utils.distributed import SINGLE
from dwlt_utils.engine import Precision
from dwlt_utils.errors import FileFormatError, InputError
from dwlt_utils.evaluate import evaluate
from dwlt_utils.models import build_model
from dwlt_utils.pruning import Mask, one_shot_mask
from dwlt_utils.train import (
    ADV_TRANSFER_CIFAR,
    FitResult,
    TrainConfig,
    fit,
    load_selected,
    make_optimizer,
    train_step,
)

CPU = Precision.for_device("cpu")
PIPELINE = Transforms(train="rrc", size=12, resize=14)


def arrays(n: int, seed: int) -> ImageArrays:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    # the class sets the brightness of one channel, so that there is something to learn
    images = torch.randint(0, 120, (n, 3, 12, 12), generator=g, dtype=torch.uint8)
    images[torch.arange(n), labels % 3] += (labels * 40).to(torch.uint8)[:, None, None]
    return ImageArrays(images, labels, torch.arange(n))


@pytest.fixture()
def data():
    return ArrayBatches(arrays(96, 0), PIPELINE, CPU.device), ArrayBatches(arrays(40, 1), PIPELINE, CPU.device)


def new_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("small_resnet", 4, [0.4] * 3, [0.25] * 3)


ADV = replace(
    ADV_TRANSFER_CIFAR.shortened(4),
    batch_size=32,
    lr=0.05,
    attack=AttackSpec(eps_255=8, alpha_255=4, steps=2, bn_mode="train"),
    val_attack=AttackSpec(eps_255=8, alpha_255=4, steps=3),
)


@pytest.fixture(autouse=True)
def deterministic():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


def test_pruned_weights_stay_exactly_zero_through_training(tmp_path, data):
    model = new_model()
    mask = one_shot_mask(model.model, 0.6)
    before = copy.deepcopy(model.state_dict())
    config = TrainConfig(epochs=2, batch_size=16, lr=0.1, weight_decay=5e-4, momentum=0.9, val_from_epoch=-1, keep=())
    fit(model, data[0], None, config, tmp_path, seed=0, mask=mask, progress="off")
    params = dict(model.model.named_parameters())
    for name in mask:
        assert (params[name][~mask[name]] == 0).all(), name
        assert not torch.equal(params[name][mask[name]], before[f"model.{name}"][mask[name]])
    assert Mask.from_weights(model.model).sparsity >= mask.sparsity


class Killed(Exception):
    pass


def test_a_run_killed_after_an_epoch_resumes_to_the_uninterrupted_result(tmp_path, data):
    mask = one_shot_mask(new_model().model, 0.5)
    whole = new_model()
    fit(whole, *data, ADV, tmp_path / "whole", seed=3, mask=mask, progress="off")

    def kill_after_epoch_1(row):
        if row["epoch"] == 1:
            raise Killed

    first = new_model()
    with pytest.raises(Killed):
        fit(first, *data, ADV, tmp_path / "killed", seed=3, mask=mask, progress="off", on_epoch_end=kill_after_epoch_1)
    restarted = new_model()  # a new process: nothing survives but the run directory
    result = fit(restarted, *data, ADV, tmp_path / "killed", seed=3, mask=mask, progress="off")
    assert result.resumed_from == 2
    assert_same_outcome(whole, restarted, tmp_path / "whole", result)


class KillMidEpoch(ArrayBatches):
    """Dies inside the third epoch, after two of its batches: a kill between checkpoints."""

    calls = 0

    def train(self, batch_size, generator, drop_last=False, ranks=SINGLE):
        KillMidEpoch.calls += 1
        for i, batch in enumerate(super().train(batch_size, generator, drop_last, ranks)):
            if KillMidEpoch.calls == 3 and i == 2:
                raise Killed
            yield batch


def test_a_run_killed_inside_an_epoch_loses_only_that_epoch(tmp_path, data):
    whole = new_model()
    fit(whole, *data, ADV, tmp_path / "whole", seed=4, progress="off")
    dying = KillMidEpoch(arrays(96, 0), PIPELINE, CPU.device)
    with pytest.raises(Killed):
        fit(new_model(), dying, data[1], ADV, tmp_path / "killed", seed=4, progress="off")
    restarted = new_model()
    result = fit(restarted, *data, ADV, tmp_path / "killed", seed=4, progress="off")
    assert result.resumed_from == 2
    assert_same_outcome(whole, restarted, tmp_path / "whole", result)


def assert_same_outcome(whole, restarted, whole_dir, result: FitResult):
    for key, value in whole.state_dict().items():
        assert torch.equal(value, restarted.state_dict()[key]), key
    reference = torch.load(whole_dir / "resume.pt", weights_only=True)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(result.history) == strip(reference["history"])
    assert result.best == reference["best"]
    for selection in ("best_sa", "best_ra"):
        a = torch.load(whole_dir / f"{selection}.pt", weights_only=True)
        b = torch.load(result.checkpoint_path(selection), weights_only=True)
        assert a["epoch"] == b["epoch"]
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_finished_run_is_not_recomputed(tmp_path, data):
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, weight_decay=0.0, val_from_epoch=0)
    fit(new_model(), *data, config, tmp_path, seed=0, progress="off")
    again = new_model()
    epochs_run = []
    result = fit(again, *data, config, tmp_path, seed=0, progress="off", on_epoch_end=epochs_run.append)
    assert epochs_run == [] and result.resumed_from == 2 and len(result.history) == 2


def test_checkpoints_are_selected_on_validation(tmp_path, data):
    model = new_model()
    result = fit(model, *data, ADV, tmp_path, seed=1, progress="off")
    validated = [row for row in result.history if "val_SA" in row]
    assert [row["epoch"] for row in validated] == [2, 3]  # validation from epoch 45 of 100 → 2 of 4
    for selection, metric in (("best_sa", "val_SA"), ("best_ra", "val_RA")):
        best = max(row[metric] for row in validated)
        first = next(row for row in validated if row[metric] == best)  # ties: the earlier epoch wins
        assert result.best[selection]["epoch"] == first["epoch"]
        chosen = load_selected(model, result, selection)
        again = evaluate(model, data[1], attack=ADV.val_attack, precision=CPU)
        assert again[metric[4:]] == pytest.approx(chosen[metric[4:]])
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0].startswith("epoch,")


def test_evaluate_warns_on_a_model_in_train_mode_and_restores_it(data):
    model = new_model().train()
    with pytest.warns(UserWarning, match="train mode"):
        out = evaluate(model, data[1], attack=AttackSpec(eps_255=0, alpha_255=1, steps=2), precision=CPU)
    assert model.training
    assert out["RA"] == out["SA"]  # ε = 0: the attack changes nothing
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = evaluate(model, data[1], precision=CPU)
    assert set(clean) == {"SA"} and 0 <= clean["SA"] <= 100


def test_validation_data_is_required_when_the_recipe_validates(tmp_path, data):
    with pytest.raises(ValueError, match="validation data"):
        fit(new_model(), data[0], None, ADV, tmp_path, seed=0, progress="off")


def test_the_fused_optimizer_updates_as_torchs_default_sgd_loop(data):
    engine, reference = new_model(), new_model()
    config = replace(ADV, attack=None)
    optimizers = {
        "engine": make_optimizer(engine, config),
        "reference": torch.optim.SGD(
            reference.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            foreach=False,
        ),
    }
    assert optimizers["engine"].defaults["fused"]
    x, y = next(data[0].train(32, torch.Generator().manual_seed(0)))
    for _ in range(3):  # momentum buffers come into play from the second step
        for model, key in ((engine, "engine"), (reference, "reference")):
            train_step(
                model,
                x,
                y,
                optimizers[key],
                attack=None,
                masked=None,
                generator=torch.Generator().manual_seed(1),
                precision=CPU,
            )
    expected = reference.state_dict()
    for name, value in engine.state_dict().items():
        assert torch.allclose(value.float(), expected[name].float(), rtol=1e-6, atol=1e-7), name
    assert not torch.equal(engine.state_dict()["model.fc.weight"], new_model().state_dict()["model.fc.weight"])


def test_an_epoch_that_cannot_form_a_batch_stops_with_a_sentence(tmp_path):
    one = ImageArrays(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), torch.arange(1))
    model = build_model("small_resnet", 10, (0.5,) * 3, (0.25,) * 3)
    config = TrainConfig(epochs=1, batch_size=4, lr=0.1, weight_decay=0, val_from_epoch=-1, keep=())
    with pytest.raises(InputError, match=r"formed no batch of at least two images .* at least two images\.$"):
        fit(model, ArrayBatches(one, PIPELINE, "cpu"), None, config, tmp_path, seed=0, progress="off")
    assert not paths.resume_file(tmp_path).exists()


def test_a_damaged_resume_state_is_named_with_what_to_do(tmp_path, data):
    model = build_model("small_resnet", 10, (0.5,) * 3, (0.25,) * 3)
    config = TrainConfig(epochs=1, batch_size=16, lr=0.1, weight_decay=0, val_from_epoch=-1, keep=())
    fit(model, data[0], None, config, tmp_path, seed=0, progress="off")
    paths.resume_file(tmp_path).write_bytes(b"<!DOCTYPE html>")
    with pytest.raises(FileFormatError) as err:
        fit(model, data[0], None, config, tmp_path, seed=0, progress="off")
    assert str(err.value) == (
        f"{paths.resume_file(tmp_path)} is an HTML page (a sign-in, consent or error page saved under its name), not a "
        "checkpoint; delete it to train this run again from its first epoch."
    )


def test_a_damaged_training_log_is_named(tmp_path):
    from dwlt_utils.train import read_metrics

    for text in ("epoch,loss\n0,1\n1,2,3,4\n", "x\n1\n"):
        paths.metrics_file(tmp_path).write_text(text)
        with pytest.raises(FileFormatError, match=rf"^{paths.metrics_file(tmp_path)} is not a .*training log"):
            read_metrics(tmp_path)
