"""The official code's other input paths (PROTOCOL.md §7): the 32 px variant and the resize-only test transform."""

import pytest
import torch
import torch.nn as nn
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.models import resnet50

from dwlt_utils import paths, transfer
from dwlt_utils.augment import PAPER_224
from dwlt_utils.data import dataset_info
from dwlt_utils.errors import InputError
from dwlt_utils.notebook import Parameters
from dwlt_utils.profiles import PAPER, QUICK
from dwlt_utils.pruning import Mask
from dwlt_utils.train import FitResult, load_selected
from dwlt_utils.vocabulary import RESOLUTION_32_DEVIATION, TEST_RESIZE_DEVIATION


def paper_cell(**given):
    base = dict(pretraining="adv", dataset="cifar10", ticket="omp", sparsity=0.36)
    return transfer.TransferConfig.create(PAPER, "adv", {**base, **given})


class SourceOnly:
    """What `cell_model` reads of a plan's inputs: θ_p alone."""

    def __init__(self, state):
        self.state = state

    def source(self, config):
        return self.state


def official_32px(theta_p: dict, classes: int) -> nn.Module:
    """The model as main_adv_eval.py builds it for cifar10_3: θ_p loaded, then a new fc, conv1 and max-pool."""
    model = resnet50()
    model.load_state_dict(theta_p)
    model.fc = nn.Linear(model.fc.in_features, classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def test_the_32px_model_is_the_official_surgery_layer_by_layer():
    torch.manual_seed(0)
    theta_p = resnet50().state_dict()
    cifar10 = dataset_info("cifar10")
    ours, backbone, replaced, denominator = transfer.cell_model(
        paper_cell(resolution=32), SourceOnly(theta_p), cifar10, seed=3
    )
    official = official_32px(theta_p, cifar10.num_classes)
    assert replaced == ["conv1.weight"]
    assert denominator == "all 23,454,912 weights of the 53 backbone Conv2d layers"  # θ_p's, as the ticket's

    theirs_modules, our_modules = dict(official.named_modules()), dict(backbone.named_modules())
    assert list(theirs_modules) == list(our_modules)
    for name, module in theirs_modules.items():
        assert type(our_modules[name]) is type(module), name
        assert our_modules[name].extra_repr() == module.extra_repr(), name  # kernel, stride, padding, bias
    fresh = {"conv1.weight", "fc.weight", "fc.bias"}
    theirs_state, our_state = official.state_dict(), backbone.state_dict()
    assert list(theirs_state) == list(our_state)
    for key, value in theirs_state.items():
        assert our_state[key].shape == value.shape, key
        if key not in fresh:
            assert torch.equal(our_state[key], value), key  # θ_p, untouched
    # The fresh conv1 has PyTorch's default initialisation, as the official code's: uniform within 1/sqrt(fan in).
    assert backbone.conv1.weight.abs().max() <= 1 / 27**0.5
    # With the same fresh layers, the two are the same function of a 32 px image (normalisation aside).
    official.load_state_dict(our_state)
    x = torch.rand(2, 3, 32, 32)
    official.eval(), ours.eval()
    assert torch.allclose(ours.model(x), official(x), atol=1e-5)
    assert torch.allclose(ours(x), official(ours.normalize(x)), atol=1e-5)


def test_the_fresh_first_conv_is_seeded_and_leaves_the_global_random_state():
    arch = PAPER.architecture

    def fresh_conv1(seed: int) -> torch.Tensor:
        backbone = resnet50()
        state = torch.random.get_rng_state()
        arch.fit_to_small_inputs(backbone, seed)
        assert torch.equal(torch.random.get_rng_state(), state)
        return backbone.conv1.weight

    assert torch.equal(fresh_conv1(3), fresh_conv1(3)) and not torch.equal(fresh_conv1(3), fresh_conv1(4))


def test_a_ticket_at_32px_keeps_the_fresh_first_conv_whole(session, plant_source):
    plant_source()
    given = dict(quick=True, pretraining="adv", dataset="cifar10", ticket="omp", sparsity=0.36, epochs=1)
    given.update(dense_baseline=False)
    at_32 = transfer.plan(session, Parameters.of("03_std_transfer", {**given, "resolution": 32}))
    at_224 = transfer.plan(session, Parameters.of("03_std_transfer", given))
    assert {d for _, d in at_32.runs}.isdisjoint({d for _, d in at_224.runs})  # part of the cell's identity
    records = transfer.run_plan(at_32, session)
    assert (records.deviations.str.contains(RESOLUTION_32_DEVIATION, regex=False)).all()

    config, directory = at_32.runs[-1]
    model, backbone, _, _ = transfer.cell_model(config, at_32.inputs, dataset_info("digits"), session.seed)
    load_selected(model, FitResult(directory), "best_sa")
    ticket = at_32.inputs.mask(config)
    assert backbone.conv1.weight.shape == (8, 3, 3, 3) and bool((backbone.conv1.weight != 0).all())
    trained = Mask.from_weights(backbone)
    for name in list(ticket)[1:]:  # every other conv keeps exactly the ticket's weights
        assert torch.equal(trained[name], ticket[name]), name
    assert (paths.config_file(directory)).is_file()
    assert config.notebook_parameters("03_std_transfer", session.seed, "fp32").changed()["resolution"] == 32


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def test_the_resize_only_test_transform_is_torchvisions_resize_without_the_crop():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    config = paper_cell(test_transform="resize")
    ours = config.transforms.eval_batch(images)
    assert ours.shape == (4, 3, 224, 224)
    for image, out in zip(images, ours):
        reference = TF.to_tensor(TF.resize(to_pil(image), 224))  # cifar10_2's Resize(224), nothing cropped
        assert (out - reference).abs().max().item() <= 1 / 255 + 1e-6
    assert config.transforms.train == PAPER_224.train  # training keeps the protocol's RandomResizedCrop
    assert TEST_RESIZE_DEVIATION in config.deviations() and paper_cell().deviations() == []


def test_the_32px_pipeline_crops_with_padding_and_tests_images_as_they_are():
    config = paper_cell(resolution=32)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(config.transforms.eval_batch(images), images.float() / 255)
    assert config.transforms.train_batch(images, torch.Generator().manual_seed(0)).shape == (2, 3, 32, 32)
    assert (config.transforms.train, config.transforms.padding) == ("crop", 4)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (dict(resolution=64), r"^Unknown resolution 64; accepted: 224, 32\.$"),
        (dict(resolution="32"), r"^Unknown resolution '32'; accepted: 224, 32\.$"),
        (dict(test_transform="crop"), r"^Unknown test_transform 'crop'; accepted: resize_crop, resize\.$"),
        (dict(resolution=32, test_transform="resize"), r"^test_transform applies to 224 px inputs"),
    ],
)
def test_a_wrong_resolution_or_test_transform_is_one_sentence(given, message):
    with pytest.raises(InputError, match=message) as err:
        paper_cell(**given)
    assert "\n" not in str(err.value)


def test_the_quick_profile_runs_the_32px_variant_on_its_stand_in_at_its_scale():
    config = transfer.TransferConfig.create(
        QUICK, "std", dict(pretraining="adv", dataset="cifar10", ticket="dense", sparsity=0, resolution=32)
    )
    assert config.transforms == QUICK.transforms_32px and config.transforms.size == dataset_info("digits").native_size


def test_the_quick_profile_runs_visda_on_digits_shifted_to_another_domain(session, plant_source):
    plant_source()
    given = dict(quick=True, pretraining="adv", dataset="visda17", ticket="omp", sparsity=0.36, epochs=1)
    planned = transfer.plan(session, Parameters.of("03_std_transfer", {**given, "dense_baseline": False}))
    records = transfer.run_plan(planned, session)
    assert set(zip(records.dataset, records.stands_for)) == {("digits_shifted", "visda17")}
    splits = planned.inputs.splits(planned.cells[0])
    assert torch.equal(splits.val.images, splits.test.images)  # validated on its test images, as VisDA
    digits = transfer.load_splits("digits", session.roots.data_root)
    assert torch.equal(splits.train.images, digits.train.images)
    assert not torch.equal(splits.test.images, digits.test.images) and torch.equal(
        splits.test.labels, digits.test.labels
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (dict(regime="adv"), r"^VisDA-2017 is in standard transfer only, as in the official code"),
        (dict(data_fraction=0.5), r"^VisDA-2017 trains on all its training images"),
        (dict(test_transform="resize"), r"^VisDA-2017 has its own test transform"),
        (dict(resolution=32), r"^resolution 32 is for data sets of 32 px images; visda17 is not one: use 224\.$"),
    ],
)
def test_visda_is_run_as_the_official_code_runs_it_or_refused_in_one_sentence(given, message):
    regime = given.pop("regime", "std")
    base = dict(pretraining="adv", dataset="visda17", ticket="dense", sparsity=0)
    for profile in (PAPER, QUICK):
        with pytest.raises(InputError, match=message):
            transfer.TransferConfig.create(profile, regime, {**base, **given})


def test_the_quick_profile_runs_the_resize_only_test_as_a_cell_of_its_own(session, plant_source):
    plant_source()
    given = dict(quick=True, pretraining="adv", dataset="cifar10", ticket="omp", sparsity=0.36, epochs=1)
    given.update(dense_baseline=False)
    resized = transfer.plan(session, Parameters.of("04_adv_transfer", {**given, "test_transform": "resize"}))
    protocol = transfer.plan(session, Parameters.of("04_adv_transfer", given))
    assert resized.runs[0][1] != protocol.runs[0][1]
    assert resized.cells[0].transforms.resize == resized.cells[0].transforms.size == QUICK.transforms.size
    records = transfer.run_plan(resized, session)
    assert set(records.metric) == {"SA", "RA"} and records.deviations.str.contains(TEST_RESIZE_DEVIATION).all()
