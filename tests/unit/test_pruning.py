"""Masks against torch's pruning as the official Double-Win code applies it (utils_pruning.py there)."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune
from torchvision.models import resnet50

from dwlt_utils.errors import InputError
from dwlt_utils.models import SmallResNet, build_backbone, prunable_weight_names
from dwlt_utils.pruning import (
    Mask,
    expected_kept,
    export_ticket,
    import_ticket,
    level_for_sparsity,
    one_shot_mask,
    prune_global_magnitude,
    prune_global_random,
    sparsity_at_level,
)


# --- the official code's way, written out with torch.nn.utils.prune -----------------------------------
def official_prune(model: nn.Module, amount: float) -> None:
    convs = tuple((m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d))
    prune.global_unstructured(convs, pruning_method=prune.L1Unstructured, amount=amount)


def official_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k[: -len("_mask")]: v.bool() for k, v in model.state_dict().items() if k.endswith("weight_mask")}


def official_rewind(model: nn.Module, init: dict) -> None:
    """pruning_with_rewind after the prune: keep the mask, reload θ_p, re-apply the mask."""
    masks = {f"{k}_mask": v.float() for k, v in official_masks(model).items()}
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            prune.remove(m, "weight")
    model.load_state_dict(init)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            prune.CustomFromMask.apply(m, "weight", mask=masks[f"{name}.weight_mask"])


def perturb(official: nn.Module, ours: nn.Module, mask: Mask, seed: int) -> None:
    """The same 'training' on both sides: identical noise on every Conv2d weight."""
    gen = torch.Generator().manual_seed(seed)
    ours_params = dict(ours.named_parameters())
    with torch.no_grad():
        for name, m in official.named_modules():
            if isinstance(m, nn.Conv2d):
                noise = torch.randn(m.weight_orig.shape, generator=gen) * 0.01
                m.weight_orig.add_(noise)
                ours_params[f"{name}.weight"].add_(noise)
        # torch's reparametrisation recomputes `weight = weight_orig * weight_mask` in a forward pre-hook;
        # the official loop validates (a forward pass) before every prune, which refreshes it.
        official.eval()(torch.zeros(1, 3, 32, 32))
    mask.apply_(ours)


def assert_same(mask: Mask, reference: dict[str, torch.Tensor]) -> None:
    assert list(mask) == list(reference)
    for name in mask:
        assert torch.equal(mask[name], reference[name]), name


def run_both(official: nn.Module, levels: int) -> list[Mask]:
    ours = copy.deepcopy(official)
    init = copy.deepcopy(official.state_dict())
    official_prune(official, 0.2)
    official_rewind(official, init)
    mask = prune_global_magnitude(ours, Mask.ones_like(ours), 0.2)
    mask.apply_(ours)
    masks = [mask]
    assert_same(mask, official_masks(official))
    for level in range(2, levels + 1):
        perturb(official, ours, mask, seed=level)
        official_prune(official, 0.2)
        official_rewind(official, init)
        mask = prune_global_magnitude(ours, mask, 0.2)
        ours.load_state_dict(init)
        mask.apply_(ours)
        assert_same(mask, official_masks(official))
        masks.append(mask)
    return masks


def test_imp_masks_equal_torch_global_unstructured_on_resnet50():
    torch.manual_seed(0)
    masks = run_both(build_backbone("resnet50", 1000), levels=6)
    total = masks[0].total
    assert total == 23_454_912  # all 53 Conv2d weights of ResNet-50
    for level, mask in enumerate(masks, start=1):
        assert mask.kept == expected_kept(total, level)
        assert abs((total - mask.kept) - total * sparsity_at_level(level)) <= 1.0


def test_identical_weights_with_many_ties_give_torchs_mask():
    torch.manual_seed(1)
    model = SmallResNet(10)
    with torch.no_grad():  # three magnitudes only: almost every comparison is a tie
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randint(-3, 4, m.weight.shape).float() / 10)
    run_both(model, levels=5)


def test_integer_ladder_stays_within_a_weight_or_two_of_the_formula():
    total = 23_454_912
    for level in range(1, 20):
        pruned = total - expected_kept(total, level)
        # Rounding at every event drifts by at most 0.5 · Σ 0.8^i < 2.5 weights; on ResNet-50 it peaks at
        # 1.001 weights (levels 9 and 10) and stays within one weight at every other level.
        assert abs(pruned - total * sparsity_at_level(level)) < 1.01


def test_magnitude_pruning_leaves_backbone_and_input_mask_alone():
    torch.manual_seed(2)
    model = SmallResNet(10)
    before = copy.deepcopy(model.state_dict())
    full = Mask.ones_like(model)
    mask = prune_global_magnitude(model, full, 0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert full.sparsity == 0.0
    assert mask.kept == full.total - round(0.5 * full.total)
    # every kept weight is at least as large as every pruned one
    params = dict(model.named_parameters())
    kept = torch.cat([params[n].detach().abs()[mask[n]] for n in mask])
    pruned = torch.cat([params[n].detach().abs()[~mask[n]] for n in mask])
    assert kept.min() >= pruned.max()


def test_random_pruning_is_seeded_and_only_removes_kept_weights():
    torch.manual_seed(3)
    model = SmallResNet(10)
    first = prune_global_magnitude(model, Mask.ones_like(model), 0.2)
    a = prune_global_random(model, first, 0.3, torch.Generator().manual_seed(7))
    b = prune_global_random(model, first, 0.3, torch.Generator().manual_seed(7))
    c = prune_global_random(model, first, 0.3, torch.Generator().manual_seed(8))
    assert a == b and a != c
    assert a.kept == first.kept - round(0.3 * first.kept)
    for name in a:  # nothing pruned before comes back
        assert not (a[name] & ~first[name]).any()


def test_one_shot_pruning_reaches_the_ladder_sparsity():
    model = SmallResNet(10)
    mask = one_shot_mask(model, sparsity_at_level(11), "magnitude")
    assert abs(mask.sparsity - sparsity_at_level(11)) * mask.total <= 0.5
    with pytest.raises(InputError, match="accepted"):
        one_shot_mask(model, 0.5, "l2")


def test_official_ticket_files_import_with_the_same_mask(tmp_path):
    torch.manual_seed(4)
    net = resnet50()
    official_prune(net, 0.2)
    reference = official_masks(net)
    # The official evaluation wraps the model as nn.Sequential(normalize, model): keys become `1.<module>`;
    # DataParallel adds `module.`; files may hold the state_dict bare or under `state_dict`.
    wrapped = nn.Sequential(nn.Identity(), net)
    for name, payload in {
        "sequential.pth.tar": {"state_dict": wrapped.state_dict()},
        "dataparallel.pth.tar": {f"module.{k}": v for k, v in net.state_dict().items()},
    }.items():
        torch.save(payload, tmp_path / name)
        assert_same(import_ticket(tmp_path / name), reference)


def test_exported_ticket_reapplies_with_custom_from_mask(tmp_path):
    torch.manual_seed(5)
    source = build_backbone("resnet50", 1000)
    mask = one_shot_mask(source, sparsity_at_level(3))
    export_ticket(tmp_path / "ticket.pth.tar", mask)
    # What the official main_*_eval.py does with --tickets_file:
    loaded = torch.load(tmp_path / "ticket.pth.tar", map_location="cpu")
    if "state_dict" in loaded:
        loaded = loaded["state_dict"]
    current = {k: v for k, v in loaded.items() if "mask" in k}
    fresh = resnet50()
    # float32 initialisation draws the odd exact zero; the official check_sparsity counts those too
    natural_zeros = sum(int(((fresh.get_parameter(n) == 0) & mask[n]).sum()) for n in mask)
    for name, m in fresh.named_modules():
        if isinstance(m, nn.Conv2d):
            prune.CustomFromMask.apply(m, "weight", mask=current[name + ".weight_mask"])
    convs = [m.weight for m in fresh.modules() if isinstance(m, nn.Conv2d)]
    zeros = sum(int((w == 0).sum()) for w in convs)
    total = sum(w.numel() for w in convs)
    assert total == mask.total
    assert zeros - natural_zeros == mask.total - mask.kept
    assert (zeros - natural_zeros) / total == pytest.approx(sparsity_at_level(3), abs=0.5 / total)


def test_mask_save_load_and_report(tmp_path):
    model = SmallResNet(10)
    mask = one_shot_mask(model, 0.36)
    mask.save(tmp_path / "ticket")
    again = Mask.load(tmp_path / "ticket")
    assert again == mask
    report = __import__("json").loads((tmp_path / "ticket" / "sparsity.json").read_text())
    assert report["total"] == mask.total and report["kept"] == mask.kept
    assert report["sparsity"] == pytest.approx(0.36, abs=1 / mask.total)
    assert report["denominator"] == "all 12 backbone Conv2d weights (fc, biases and BatchNorm excluded)"
    assert set(report["layers"]) == set(prunable_weight_names(model))
    assert sum(layer["kept"] for layer in report["layers"].values()) == mask.kept
    assert again.layers() == report["layers"]
    with pytest.raises(InputError, match="does not know its architecture"):
        again.report()  # the file holds the tensors alone: the report saved beside it says the rest


def test_mask_for_another_architecture_is_refused():
    mask = Mask.ones_like(SmallResNet(10))
    with pytest.raises(InputError, match="architecture"):
        mask.apply_(build_backbone("resnet50", 1000))


def test_a_backbone_of_no_registered_architecture_is_refused():
    with pytest.raises(InputError, match="not built from a registered architecture") as err:
        Mask.ones_like(resnet50())
    assert "\n" not in str(err.value) and "accepted: resnet50, resnet50_32px, small_resnet" in str(err.value)


def test_missing_mask_and_empty_ticket_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="mask.pt"):
        Mask.load(tmp_path)
    torch.save({"conv1.weight": torch.ones(1)}, tmp_path / "t.pth")
    with pytest.raises(Exception, match="weight_mask"):
        import_ticket(tmp_path / "t.pth")


@pytest.mark.parametrize(
    "printed, level",
    [
        (0.0, 0),
        (0.2, 1),
        (0.36, 2),
        (0.488, 3),
        (0.5904, 4),
        (0.6723, 5),
        (0.7379, 6),
        (0.7903, 7),
        (0.8322, 8),
        (0.8658, 9),
        (0.8926, 10),
        (0.9141, 11),
        (0.9313, 12),
        (0.945, 13),
        (0.956, 14),
        (0.9648, 15),
        (1 - 0.8**11, 11),
        (0.914, 11),
    ],
)
def test_level_for_sparsity_accepts_printed_ladder_values(printed, level):
    assert level_for_sparsity(printed) == level


@pytest.mark.parametrize("bad", [0.9145, 0.5, 0.91, 1.0, -0.1, "0.9141", 91.41])
def test_level_for_sparsity_rejects_values_off_the_ladder(bad):
    with pytest.raises(ValueError) as err:
        level_for_sparsity(bad)
    assert "\n" not in str(err.value)
    if bad == 0.9145:
        assert "level 11 (0.9141)" in str(err.value) and "level 12 (0.9313)" in str(err.value)


def test_too_coarse_a_sparsity_is_ambiguous():
    # Far up the ladder the levels are closer than the printed precision: 0.9997 fits levels 36 and 37.
    with pytest.raises(ValueError, match="too coarse"):
        level_for_sparsity(0.9997)


def test_ladder_sparsities_are_stored_as_printed():
    from dwlt_utils.pruning import MAX_LEVEL, printed_sparsity

    assert [printed_sparsity(k) for k in (0, 2, 10, 11)] == [0.0, 0.36, 0.8926, 0.9141]
    assert printed_sparsity(2) != sparsity_at_level(2)  # 0.3599999999999999, which nobody types
    for level in range(MAX_LEVEL + 1):
        printed = printed_sparsity(level)
        assert level_for_sparsity(printed) == level and abs(printed - sparsity_at_level(level)) < 5e-5
