import pytest
import torch
import torch.nn.functional as F

from dwlt_utils.attacks import PGD3_IMP, PGD20_EVAL, AttackSpec, fgsm_rs, pgd_linf
from dwlt_utils.errors import InputError
from dwlt_utils.models import build_model

EPS, ALPHA = 8 / 255, 2 / 255


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return build_model("small_resnet", 10, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]).eval()


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(24, 3, 16, 16, generator=g)
    x[:4] = 0.0  # images at the edges of [0, 1] exercise the clipping
    x[4:8] = 1.0
    return x, torch.randint(0, 10, (24,), generator=g)


def test_pgd_equals_torchattacks_without_random_start(model, batch, torchattacks):
    x, y = batch
    for steps in (1, 5, 20):
        reference = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=steps, random_start=False)(x, y)
        ours = pgd_linf(model, x, y, eps=EPS, alpha=ALPHA, steps=steps, random_start=False)
        assert (ours - reference).abs().max().item() <= 1e-6


@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_the_eps_ball_and_the_pixel_range(model, batch, random_start):
    x, y = batch
    x_adv = pgd_linf(
        model,
        x,
        y,
        eps=EPS,
        alpha=ALPHA,
        steps=7,
        random_start=random_start,
        generator=torch.Generator().manual_seed(0),
    )
    assert (x_adv - x).abs().max().item() <= EPS + 1e-7
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert (x_adv != x).any()


def test_pgd_raises_the_loss(model, batch):
    x, y = batch
    x_adv = pgd_linf(model, x, y, eps=EPS, alpha=ALPHA, steps=10, random_start=False)
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)


def test_zero_eps_gives_the_clean_predictions(model, batch):
    x, y = batch
    x_adv = pgd_linf(model, x, y, eps=0.0, alpha=ALPHA, steps=5)
    assert torch.equal(x_adv, x)
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1), model(x).argmax(1))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_mode_and_requires_grad_are_restored_and_no_gradient_is_left(model, batch, training, bn_mode):
    x, y = batch
    model.train(training)
    frozen = model.model.conv1.weight
    frozen.requires_grad_(False)  # a mixed state must come back as it was
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    pgd_linf(model, x, y, eps=EPS, alpha=ALPHA, steps=3, bn_mode=bn_mode)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())


def test_bn_mode_decides_whether_running_statistics_move(model, batch):
    x, y = batch
    bn = model.model.bn1
    before = bn.running_mean.clone()
    pgd_linf(model, x, y, eps=EPS, alpha=ALPHA, steps=2, bn_mode="eval")
    assert torch.equal(bn.running_mean, before)
    pgd_linf(model, x, y, eps=EPS, alpha=ALPHA, steps=2, bn_mode="train")
    assert not torch.equal(bn.running_mean, before)  # the official training attack's side effect


def test_random_start_is_reproducible_with_a_generator(model, batch):
    x, y = batch
    a = pgd_linf(model, x, y, eps=EPS, alpha=ALPHA, steps=2, generator=torch.Generator().manual_seed(5))
    b = pgd_linf(model, x, y, eps=EPS, alpha=ALPHA, steps=2, generator=torch.Generator().manual_seed(5))
    c = pgd_linf(model, x, y, eps=EPS, alpha=ALPHA, steps=2, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_fgsm_rs_is_one_step_of_one_and_a_quarter_eps(model, batch):
    x, y = batch
    eps = 4 / 255
    a = fgsm_rs(model, x, y, eps=eps, bn_mode="eval", generator=torch.Generator().manual_seed(3))
    b = pgd_linf(
        model, x, y, eps=eps, alpha=1.25 * eps, steps=1, bn_mode="eval", generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(a, b)
    assert (a - x).abs().max().item() <= eps + 1e-7


def test_attack_spec_describes_and_runs(model, batch):
    x, y = batch
    assert PGD20_EVAL.describe().startswith("linf PGD-20 eps=8/255 alpha=2/255")
    assert "5.333/255" in PGD3_IMP.describe()
    spec = AttackSpec(eps_255=8, alpha_255=2, steps=3, random_start=False)
    assert torch.equal(spec(model, x, y), pgd_linf(model, x, y, eps=EPS, alpha=ALPHA, steps=3, random_start=False))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(eps_255="8/255", alpha_255=2, steps=10),
        dict(eps_255=-1, alpha_255=2, steps=10),
        dict(eps_255=8, alpha_255=2, steps=2.5),
        dict(eps_255=8, alpha_255=2, steps=10, bn_mode="train_eval"),
    ],
)
def test_attack_spec_rejects_bad_values_in_one_sentence(kwargs):
    with pytest.raises(InputError) as err:
        AttackSpec(**kwargs)
    assert "\n" not in str(err.value)
