import pytest
import torch
from PIL import Image
from torchvision.models import resnet50

from dwlt_utils import sources
from dwlt_utils.checkpoints import get_source
from dwlt_utils.errors import InputError, MissingInputError
from dwlt_utils.profiles import PAPER, QUICK


def test_the_choice_of_sources_is_checked():
    assert sources.check_sources(["adv", "standard"], 4, PAPER) == ["adv", "standard"]
    with pytest.raises(InputError, match="accepted"):
        sources.check_sources(["adv"], 3, PAPER)  # no ℓ∞ 3/255 checkpoint is published
    assert sources.check_sources(["adv"], 3, QUICK) == ["adv"]  # the quick profile pre-trains its own
    with pytest.raises(InputError, match="non-empty list"):
        sources.check_sources([], 4, PAPER)


def test_a_missing_source_says_how_to_get_it(roots, plant_source):
    assert "run notebooks/01_load_pretrained.ipynb with -p quick True" in sources.missing(QUICK, "adv", 4, roots)
    assert "converts resnet50_linf_eps4.0.ckpt" in sources.missing(PAPER, "adv", 4, roots)
    with pytest.raises(MissingInputError, match="^The dense standard source is not in"):
        sources.load(QUICK, "standard", 4, roots)
    plant_source("standard")
    assert sources.prepared(QUICK, "standard", 8, roots)  # the standard source has no ε
    assert set(sources.load(QUICK, "standard", 0, roots)) >= {"conv1.weight", "fc.weight"}


def test_a_published_checkpoint_is_converted_once_and_checked_against_its_hash(roots, tmp_path):
    source = get_source("standard")
    with pytest.raises(MissingInputError, match=f"{source.filename} are not in .*download is off.*{source.url}"):
        sources.convert_published(PAPER, "standard", 4, roots, download=False)
    with pytest.raises(MissingInputError, match="no direct download link"):
        sources.convert_published(PAPER, "fast_adv", 4, roots, download=True)
    roots.weights_dir.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(resnet50().state_dict(), roots.weights_dir / source.filename)  # not the published file
    with pytest.warns(UserWarning, match="differs from the published"):
        meta = sources.convert_published(PAPER, "standard", 4, roots, download=False)
    assert meta["layout"] == "torchvision" and meta["registry"]["published_sha256"] == source.sha256
    assert sources.summary(PAPER, "standard", meta)["SHA-256 matches the published one"] is False
    assert sources.convert_published(PAPER, "standard", 4, roots, download=False)["sha256"] == meta["sha256"]
    # ImageNet top-1 on a class-stratified subset of a (tiny) validation folder
    for label in ("n01", "n02"):
        folder = tmp_path / "imagenet" / "val" / label
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 48), (60 * i, 100, 200)).save(folder / f"{i}.JPEG")
    from dwlt_utils.engine import Precision

    top1 = sources.imagenet_top1(
        roots.source("paper", "standard", 0), tmp_path / "imagenet", 4, Precision.for_device("cpu")
    )
    assert top1 in (0.0, 25.0, 50.0, 75.0, 100.0)
