"""The fast paths against the eager step they replace (`pytest -m gpu` on a CUDA machine).

CUDA graphs and torch.compile stay opt-in until these pass on a GPU and the bench shows them faster:
- the same steps on the same batches, without randomness (no crops, no random start), leave the weights
  where the eager steps leave them, to the rounding of non-deterministic kernels;
- with the protocol's randomness (crops, flips, PGD's random start), 270 steps of adversarial training (30
  epochs of 9 full batches) follow the eager loss trajectory: the mean training loss of the last 4 epochs
  within 10% of the eager one's, and the test SA within 5 points (one seed each; the draws differ, so the
  runs are not equal).
"""

from dataclasses import replace

import pytest
import torch

from dwlt_utils.attacks import PGD10_TRAIN, PGD20_EVAL
from dwlt_utils.augment import QUICK_16, Transforms
from dwlt_utils.batches import ArrayBatches
from dwlt_utils.data import load_splits
from dwlt_utils.engine import Precision, generator_for
from dwlt_utils.evaluate import evaluate
from dwlt_utils.models import build_model
from dwlt_utils.profiles import QUICK
from dwlt_utils.pruning import one_shot_mask
from dwlt_utils.train import GraphedStep, fit, make_optimizer, read_metrics, train_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FAST = {"graphed": dict(cuda_graphs=True), "compiled": dict(compile=True)}


def weights_after_steps(tmp_path, precision: Precision, steps: int) -> dict[str, torch.Tensor]:
    splits = load_splits("digits", tmp_path)
    torch.manual_seed(0)
    model = precision.prepare(build_model("small_resnet", 10, splits.info.mean, splits.info.std))
    masked = one_shot_mask(model.model, 0.5).bind(model.model)
    attack = replace(PGD10_TRAIN, random_start=False)
    config = replace(QUICK.recipes["adv_transfer"], attack=attack)
    optimizer = make_optimizer(model, config, precision)
    net = precision.compiled(model)
    plain = ArrayBatches(splits.train, Transforms(train="none", size=8, resize=8), precision.device)
    full = [(x, y) for x, y in plain.eval(config.batch_size) if len(y) == config.batch_size]
    batches = full[:steps]  # the same full batches, in order, for both
    graphed = GraphedStep(net, optimizer, attack=attack, masked=masked, precision=precision)
    for x, y in batches:
        if precision.cuda_graphs:
            graphed(x, y)
        else:
            generator = generator_for(precision.device, 0)
            train_step(net, x, y, optimizer, attack=attack, masked=masked, generator=generator, precision=precision)
    torch.cuda.synchronize()
    return {k: v.detach().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


# Each compilation takes tens of seconds of a short GPU lease: the compiled step is checked in bf16, the CUDA
# default, and the graphed one (captured in milliseconds) in both precisions.
CASES = [("graphed", False), ("graphed", True), ("compiled", True)]


@pytest.mark.parametrize(("fast", "bf16"), CASES, ids=[f"{f}-{'bf16' if b else 'fp32'}" for f, b in CASES])
def test_a_fast_step_leaves_the_weights_where_the_eager_step_does(tmp_path, fast, bf16):
    eager = weights_after_steps(tmp_path, Precision.for_device("cuda", bf16=bf16), steps=9)
    other = weights_after_steps(tmp_path, Precision.for_device("cuda", bf16=bf16, **FAST[fast]), steps=9)
    for name, value in eager.items():
        gap = float((other[name] - value).abs().max() / value.abs().max().clamp_min(1e-6))
        assert gap < (2e-2 if bf16 else 1e-3), (name, gap)


def adversarial_run(tmp_path, precision: Precision, name: str) -> tuple[float, dict]:
    splits = load_splits("digits", tmp_path)
    torch.manual_seed(1)
    model = build_model("small_resnet", 10, splits.info.mean, splits.info.std)
    recipe = replace(QUICK.recipes["adv_transfer"], epochs=30, milestones=(15, 22), val_from_epoch=29)
    batches = {n: ArrayBatches(getattr(splits, n), QUICK_16, precision.device) for n in ("train", "val", "test")}
    run_dir = tmp_path / name
    fit(model, batches["train"], batches["val"], recipe, run_dir, seed=1, precision=precision, progress="off")
    losses = read_metrics(run_dir).train_loss.tolist()
    fp32 = Precision.for_device("cuda", bf16=False, channels_last=False)
    return sum(losses[-4:]) / 4, evaluate(model.eval(), batches["test"], attack=PGD20_EVAL, precision=fp32)


@pytest.mark.parametrize("fast", FAST)
def test_a_few_hundred_fast_steps_follow_the_eager_loss_trajectory(tmp_path, fast):
    eager_loss, eager = adversarial_run(tmp_path, Precision.for_device("cuda"), "eager")
    fast_loss, other = adversarial_run(tmp_path, Precision.for_device("cuda", **FAST[fast]), fast)
    print(f"{fast}: loss {fast_loss:.4f} vs eager {eager_loss:.4f}; SA {other['SA']:.2f} vs {eager['SA']:.2f}")
    assert abs(fast_loss - eager_loss) <= 0.1 * eager_loss
    assert abs(other["SA"] - eager["SA"]) <= 5.0
