import json
from dataclasses import dataclass, field, replace

import pytest

from dwlt_utils import paths
from dwlt_utils.attacks import PGD10_TRAIN, AttackSpec
from dwlt_utils.config import canonical_json, config_hash, non_defaults, write_config
from dwlt_utils.errors import InputError
from dwlt_utils.train import ADV_TRANSFER_CIFAR, STD_TRANSFER, TrainConfig


@dataclass(frozen=True)
class Inner:
    eps_255: float = 8
    steps: int = 10


@dataclass(frozen=True)
class Example:
    dataset: str = "cifar10"
    fraction: float = 1.0
    inner: Inner = field(default_factory=Inner)


def test_hash_depends_on_non_default_settings_only():
    assert non_defaults(Example()) == {}
    assert config_hash(Example()) == config_hash(Example(dataset="cifar10"))
    assert config_hash(Example()) != config_hash(Example(dataset="cifar100"))
    assert non_defaults(Example(inner=Inner(steps=20))) == {"inner": {"steps": 20}}
    assert config_hash(Example(inner=Inner(steps=20))) != config_hash(Example())


def test_hash_is_canonical_and_stable():
    # key order and spacing never change the identity; the value is fixed so a change of scheme shows
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert config_hash(Example(fraction=0.01)) == config_hash(Example(fraction=0.01))
    assert len(config_hash(Example())) == 12


def test_class_is_part_of_the_identity():
    @dataclass(frozen=True)
    class Other:
        dataset: str = "cifar10"

    assert config_hash(Other()) != config_hash(Example())


def test_seed_is_a_folder_not_part_of_the_hash(tmp_path):
    a = paths.run_dir(tmp_path, "transfer", Example(), seed=1)
    b = paths.run_dir(tmp_path, "transfer", Example(), seed=2)
    assert a.parent == b.parent and a.name == "seed_1" and b.name == "seed_2"


def test_run_directory_holds_the_full_config(tmp_path):
    config = replace(ADV_TRANSFER_CIFAR, epochs=3)
    write_config(paths.config_file(tmp_path), config, seed=1, notebook="04_adv_transfer")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["attack"] == {
        "eps_255": 8,
        "alpha_255": 2,
        "steps": 10,
        "random_start": True,
        "bn_mode": "train",
    }
    assert saved["config"]["milestones"] == [50, 75]
    assert saved["config_hash"] == config_hash(config)
    assert saved["seed"] == 1 and saved["notebook"] == "04_adv_transfer"


def test_non_finite_numbers_are_refused():
    with pytest.raises(InputError):
        config_hash(Example(fraction=float("nan")))


def test_learning_rate_schedules_follow_torch():
    import torch

    for config in (
        STD_TRANSFER,
        ADV_TRANSFER_CIFAR,
        replace(ADV_TRANSFER_CIFAR, epochs=80, schedule="cosine", milestones=()),
    ):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
        if config.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.epochs)
        else:
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(config.milestones), gamma=config.gamma)
        for epoch in range(config.epochs):
            assert config.lr_at(epoch) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
            opt.step()
            sched.step()


def test_shortened_recipe_keeps_its_shape():
    short = ADV_TRANSFER_CIFAR.shortened(4)
    assert short.epochs == 4 and short.milestones == (2, 3) and short.val_from_epoch == 2
    assert short.attack == PGD10_TRAIN and short.keep == ("best_sa", "best_ra")


@pytest.mark.parametrize(
    "kwargs",
    [dict(schedule="step"), dict(keep=("best_loss",)), dict(keep=("best_ra",)), dict(epochs=0)],
)
def test_bad_recipes_are_refused(kwargs):
    base = dict(epochs=2, batch_size=8, lr=0.1, weight_decay=0.0)
    with pytest.raises(InputError):
        TrainConfig(**{**base, **kwargs})


def test_attack_spec_hashes_as_numbers():
    config = replace(STD_TRANSFER, attack=AttackSpec(eps_255=4, alpha_255=1, steps=3))
    assert non_defaults(config)["attack"]["eps_255"] == 4
