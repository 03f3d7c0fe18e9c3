import pytest
import torch

from dwlt_utils import notebook, vocabulary
from dwlt_utils.checkpoints import save_backbone_state
from dwlt_utils.models import SmallResNet
from dwlt_utils.profiles import QUICK


@pytest.fixture()
def session(tmp_path):
    """A quick-profile session on the CPU with its folders in a temporary directory."""
    folders = dict(
        data_root=str(tmp_path / "data"), run_root=str(tmp_path / "runs"), weights_dir=str(tmp_path / "weights")
    )
    session, _ = notebook.start("01_load_pretrained", dict(quick=True, seed=1, device="cpu", **folders))
    return session


@pytest.fixture()
def roots(session):
    return session.roots


@pytest.fixture()
def plant_source(roots):
    """Puts a random small backbone where notebook 01 would have put a quick source."""

    def plant(pretraining="adv"):
        torch.manual_seed(0)
        eps = vocabulary.source_eps_255(pretraining, QUICK.source_eps_255)
        state = SmallResNet(10).state_dict()
        save_backbone_state(roots.source(QUICK.name, pretraining, eps), state, {"profile": "quick"})

    return plant
