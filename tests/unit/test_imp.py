import pytest
import torch

import dwlt_utils.imp as imp
from dwlt_utils.augment import Transforms
from dwlt_utils.batches import ArrayBatches
from dwlt_utils.data import ImageArrays
from dwlt_utils.models import SmallResNet
from dwlt_utils.pruning import Mask, expected_kept, prune_global_magnitude
from dwlt_utils.train import TrainConfig, fit

MEAN, STD = [0.5] * 3, [0.25] * 3
RECIPE = TrainConfig(
    epochs=1, batch_size=16, lr=0.05, weight_decay=1e-4, schedule="constant", val_from_epoch=-1, keep=()
)


@pytest.fixture()
def setting():
    torch.manual_seed(0)
    source = SmallResNet(5).state_dict()
    g = torch.Generator().manual_seed(1)
    arrays = ImageArrays(
        torch.randint(0, 256, (48, 3, 10, 10), generator=g, dtype=torch.uint8),
        torch.randint(0, 5, (48,), generator=g),
        torch.arange(48),
    )
    batches = ArrayBatches(arrays, Transforms(train="rrc", size=8, resize=9), torch.device("cpu"))
    return source, batches


def on_this_process(setting, ladder):
    """What trains a level of the ladder in `ladder` here, as notebook 02 does on one process."""
    source, batches = setting
    return lambda level: imp.next_level(
        "small_resnet", source, MEAN, STD, batches, RECIPE, ladder, level, seed=2, progress="off"
    )


def test_rewound_model_is_the_source_with_pruned_weights_zeroed(setting):
    source, _ = setting
    backbone = SmallResNet(5)
    backbone.load_state_dict(source)
    mask = prune_global_magnitude(backbone, Mask.ones_like(backbone), 0.5)
    model = imp.rewound_model("small_resnet", source, mask, MEAN, STD)
    state = model.model.state_dict()
    for key, value in source.items():  # fc, BatchNorm statistics and counters included
        expected = value * mask[key] if key in mask else value
        assert torch.equal(state[key], expected), key


def test_ladder_levels_rewind_to_the_source_and_prune_trained_magnitudes(tmp_path, setting, monkeypatch):
    source, batches = setting
    torch.use_deterministic_algorithms(True)
    try:
        masks = imp.run_imp("small_resnet", source, tmp_path, levels=4, train_level=on_this_process(setting, tmp_path))
        total = masks[0].total
        assert [m.kept for m in masks] == [expected_kept(total, k) for k in range(1, 5)]
        for bigger, smaller in zip(masks, masks[1:]):  # pruned weights never come back
            assert all(not (smaller[n] & ~bigger[n]).any() for n in bigger)
        # Level 2 again by hand: train θ_p ⊙ m1 from scratch in another directory, prune 20%.
        model = imp.rewound_model("small_resnet", source, masks[0], MEAN, STD)
        fit(model, batches, None, RECIPE, tmp_path / "by_hand", seed=2, mask=masks[0], progress="off")
        assert prune_global_magnitude(model.model, masks[0], 0.2) == masks[1]
        trained = torch.load(tmp_path / "level_01" / "train" / "resume.pt", weights_only=True)["model"]
        assert all(torch.equal(trained[k], v) for k, v in model.state_dict().items())
    finally:
        torch.use_deterministic_algorithms(False)

    # Extending the ladder trains only the new level.
    calls = []
    monkeypatch.setattr(imp, "fit", lambda *a, **k: calls.append(k) or fit(*a, **k))
    more = imp.run_imp("small_resnet", source, tmp_path, levels=5, train_level=on_this_process(setting, tmp_path))
    assert len(calls) == 1 and more[:4] == masks
    assert more[4].kept == expected_kept(total, 5)
    assert (tmp_path / "level_05" / "sparsity.json").is_file()
