import dataclasses

import pytest

from dwlt_utils.errors import InputError
from dwlt_utils.profiles import PAPER, PROFILES, QUICK, get_profile
from dwlt_utils.vocabulary import PAPER_DATASETS


def test_quick_stand_ins():
    assert QUICK.source_dataset == "fashion_mnist" and QUICK.dataset("cifar10") == "digits"
    with pytest.raises(InputError, match="only for ImageNet .*fashion_mnist.* and CIFAR-10 .*digits.*'svhn'"):
        QUICK.dataset("svhn")


def test_the_paper_profile_runs_every_paper_data_set_as_itself():
    assert PAPER.source_dataset == "imagenet" and not PAPER.pretrains_sources
    assert [PAPER.dataset(name) for name in PAPER_DATASETS] == list(PAPER_DATASETS)
    assert PAPER.coverage_note() is None
    assert QUICK.coverage_note() == (
        "The quick profile has a stand-in for CIFAR-10 only (digits); CIFAR-100 and SVHN exist in the paper profile."
    )


def test_profiles_are_chosen_by_the_quick_switch_only():
    assert get_profile(True) is QUICK and get_profile(False) is PAPER
    assert set(PROFILES) == {"paper", "quick"}
    with pytest.raises(InputError, match="quick is True or False"):
        get_profile("yes")


def test_a_profile_names_its_architecture_which_resolves_through_the_registry():
    assert (PAPER.arch, PAPER.architecture.input_px) == ("resnet50", 224)
    assert (QUICK.arch, QUICK.architecture.input_px) == ("small_resnet", 32)
    with pytest.raises(InputError, match="Unknown architecture 'vgg16'; accepted: resnet50"):
        assert dataclasses.replace(QUICK, arch="vgg16").architecture
