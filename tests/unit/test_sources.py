import os

import pytest
import torch
from PIL import Image
from torchvision.models import resnet50

from dwlt_utils import paths, sources
from dwlt_utils.checkpoints import get_source
from dwlt_utils.errors import InputError, MissingInputError
from dwlt_utils.profiles import PAPER, QUICK


def test_the_choice_of_sources_is_checked():
    assert sources.check_sources(["adv", "standard"], 4, PAPER) == ["adv", "standard"]
    with pytest.raises(InputError, match="accepted"):
        sources.check_sources(["adv"], 3, PAPER)  # no ℓ∞ 3/255 checkpoint is published
    with pytest.raises(InputError, match=r"quick profile pre-trains its robust sources at ε = 4/255 only; got .* 3"):
        sources.check_sources(["adv"], 3, QUICK)  # it pre-trains its own, at one ε
    assert sources.check_sources(["standard"], 3, QUICK) == ["standard"]  # which the standard source ignores
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


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_damaged_source_is_named_and_never_counts_as_prepared(roots, plant_source, tmp_path):
    plant_source("adv")
    path = roots.source("quick", "adv", 4)
    assert sources.prepared(QUICK, "adv", 4, roots)
    path.write_bytes(b"<html>consent</html>")  # the file changed after it was written
    problem = sources.missing(QUICK, "adv", 4, roots)
    assert problem == (
        f"the dense adv_linf4 source {path} differs from the file written (its SHA-256 changed): delete it and "
        "re-run notebooks/01_load_pretrained.ipynb with -p quick True, which makes it again"
    )
    with pytest.raises(MissingInputError, match="^The dense adv_linf4 source .* differs from the file written"):
        sources.load(QUICK, "adv", 4, roots)
    paths.sidecar_file(path).unlink()  # without a recorded hash, the file is read (safely) to be verified
    assert "cannot be read as a weights-only state dict" in sources.missing(QUICK, "adv", 4, roots)
    torch.save({"conv1.weight": RunsCode(tmp_path / "ran")}, path)
    assert "holds a pickle that would run code (it was not read)" in sources.missing(QUICK, "adv", 4, roots)
    assert not (tmp_path / "ran").exists()


def test_notebook_01_replaces_a_damaged_source_it_made(roots, capsys):
    source = get_source("standard")
    roots.weights_dir.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(resnet50().state_dict(), roots.weights_dir / source.filename)
    with pytest.warns(UserWarning, match="differs from the published"):
        sources.convert_published(PAPER, "standard", 0, roots, download=False)
    target = roots.source("paper", "standard", 0)
    target.write_bytes(target.read_bytes()[:1000])  # truncated
    assert not sources.prepared(PAPER, "standard", 0, roots)
    with pytest.warns(UserWarning, match="differs from the published"):
        sources.convert_published(PAPER, "standard", 0, roots, download=False)
    assert f"{target} differs from the file written (its SHA-256 changed): it is made again" in capsys.readouterr().out
    assert sources.prepared(PAPER, "standard", 0, roots)
