import os

import dill
import pytest
import torch
from PIL import Image
from torchvision.models import resnet50

from dwlt_utils import paths, sources
from dwlt_utils.checkpoints import get_source, read_checksums
from dwlt_utils.errors import FileFormatError, InputError, MissingInputError
from dwlt_utils.io import sha256_of
from dwlt_utils.profiles import PAPER, QUICK

from genuine_files import robustness_checkpoint


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
    assert "run notebooks/01_load_pretrained.ipynb with -p quick True" in sources.source_problem(QUICK, "adv", 4, roots)
    assert "converts resnet50_linf_eps4.0.ckpt" in sources.source_problem(PAPER, "adv", 4, roots)
    with pytest.raises(MissingInputError, match="^The dense standard source is not in"):
        sources.load(QUICK, "standard", 4, roots)
    plant_source("standard")
    assert sources.prepared(QUICK, "standard", 8, roots)  # the standard source has no ε
    assert set(sources.load(QUICK, "standard", 0, roots)) >= {"conv1.weight", "fc.weight"}


def register(*files) -> None:
    """What a user does for checkpoints they trust: `sha256sum FILES >> SHA256SUMS` in the weights folder."""
    with open(paths.checksums_file(files[0].parent), "a") as sums:
        sums.writelines(f"{sha256_of(f)}  {f.name}\n" for f in files)


def test_a_published_checkpoint_is_converted_once_and_checked_against_its_hash(roots, tmp_path):
    source = get_source("standard")
    with pytest.raises(MissingInputError, match=f"{source.filename} are not in .*download is off.*{source.url}"):
        sources.convert_published(PAPER, "standard", 4, roots, download=False)
    with pytest.raises(MissingInputError, match="no direct download link"):
        sources.convert_published(PAPER, "fast_adv", 4, roots, download=True)
    roots.weights_dir.mkdir(parents=True)
    torch.manual_seed(0)
    original = roots.weights_dir / source.filename
    torch.save(resnet50().state_dict(), original)  # not the published file
    with pytest.raises(FileFormatError) as err:
        sources.convert_published(PAPER, "standard", 4, roots, download=False)
    assert str(err.value).startswith(f"{original} has SHA-256 {sha256_of(original)}, not the {source.sha256} ")
    assert "list its SHA-256 in" in str(err.value) and not roots.source("paper", "standard", 0).exists()
    register(original)  # the user vouches for this file
    with pytest.warns(UserWarning, match="differs from the published"):
        meta = sources.convert_published(PAPER, "standard", 4, roots, download=False)
    assert meta["layout"] == "torchvision" and meta["registry"]["published_sha256"] == source.sha256
    row = sources.summary(PAPER, "standard", meta)
    assert row["SHA-256"] == sha256_of(original)
    assert row["checked against"] == "SHA256SUMS (differs from the published one)"
    assert sources.convert_published(PAPER, "standard", 4, roots, download=False)["sha256"] == meta["sha256"]
    # ImageNet top-1 on a class-stratified subset of a (tiny) validation folder
    for label in ("n01", "n02"):
        folder = tmp_path / "imagenet" / "val" / label
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 48), (60 * i, 100, 200)).save(folder / f"{i}.JPEG")
    from dwlt_utils.engine import Precision

    top1 = sources.imagenet_top1(
        roots.source("paper", "standard", 0), source.arch, tmp_path / "imagenet", 4, Precision.for_device("cpu")
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
    problem = sources.source_problem(QUICK, "adv", 4, roots)
    assert problem == (
        f"the dense adv_linf4 source {path} differs from the file written (its SHA-256 changed): delete it and "
        "re-run notebooks/01_load_pretrained.ipynb with -p quick True, which makes it again"
    )
    with pytest.raises(MissingInputError, match="^The dense adv_linf4 source .* differs from the file written"):
        sources.load(QUICK, "adv", 4, roots)
    paths.sidecar_file(path).unlink()  # without a recorded hash, the file is read (safely) to be verified
    assert "cannot be read as a weights-only state dict" in sources.source_problem(QUICK, "adv", 4, roots)
    torch.save({"conv1.weight": RunsCode(tmp_path / "ran")}, path)
    assert "holds a pickle that would run code (it was not read)" in sources.source_problem(QUICK, "adv", 4, roots)
    assert not (tmp_path / "ran").exists()


def test_notebook_01_replaces_a_damaged_source_it_made(roots, capsys):
    source = get_source("standard")
    roots.weights_dir.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(resnet50().state_dict(), roots.weights_dir / source.filename)
    register(roots.weights_dir / source.filename)
    with pytest.warns(UserWarning, match="differs from the published"):
        sources.convert_published(PAPER, "standard", 0, roots, download=False)
    target = roots.source("paper", "standard", 0)
    target.write_bytes(target.read_bytes()[:1000])  # truncated
    assert not sources.prepared(PAPER, "standard", 0, roots)
    with pytest.warns(UserWarning, match="differs from the published"):
        sources.convert_published(PAPER, "standard", 0, roots, download=False)
    assert f"{target} differs from the file written (its SHA-256 changed): it is made again" in capsys.readouterr().out
    assert sources.prepared(PAPER, "standard", 0, roots)


def test_a_users_sha256sums_verifies_and_trusts_a_robustness_checkpoint(roots):
    source = get_source("adv", 4)
    roots.weights_dir.mkdir(parents=True)
    original = roots.weights_dir / source.filename
    torch.save(robustness_checkpoint(resnet50().state_dict()), original, pickle_module=dill)
    with pytest.raises(FileFormatError, match=f"^{original} has SHA-256 .* registered for it \\(published hash\\)"):
        sources.convert_published(PAPER, "adv", 4, roots, download=False)
    register(original)
    with pytest.warns(UserWarning, match="differs from the published"):
        meta = sources.convert_published(PAPER, "adv", 4, roots, download=False)
    assert meta["layout"] == "robustness" and meta["full_unpickling"]
    original.write_bytes(original.read_bytes()[:-10])  # the listed hash now catches a damaged copy
    roots.source("paper", "adv", 4).unlink()
    with pytest.raises(FileFormatError, match=f"registered for it \\({paths.checksums_file(roots.weights_dir)}\\)"):
        sources.convert_published(PAPER, "adv", 4, roots, download=False)


@pytest.mark.parametrize(
    "listing, problem",
    [("abc  resnet50.pth\n", "Line 1 of"), ("# hashes\n\n" + "0" * 64 + "resnet50.pth\n", "Line 3 of")],
)
def test_a_malformed_sha256sums_is_one_sentence_naming_the_line(tmp_path, listing, problem):
    (tmp_path / "SHA256SUMS").write_text(listing)
    with pytest.raises(FileFormatError, match=f"^{problem} {tmp_path / 'SHA256SUMS'} is not '<64 hex digits>  <file"):
        read_checksums(tmp_path / "SHA256SUMS")
    (tmp_path / "SHA256SUMS").write_text(f"{'A' * 64} *weights/resnet50.pth\n")
    assert read_checksums(tmp_path / "SHA256SUMS") == {"resnet50.pth": "a" * 64}
