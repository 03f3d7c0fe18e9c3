"""The engine computes what the official loop computes: one adversarial training step, side by side."""

import copy

import pytest
import torch
import torchvision.transforms.functional as TF

from dwlt_utils import bench
from dwlt_utils.attacks import PGD10_TRAIN
from dwlt_utils.augment import crop_resize, sample_boxes
from dwlt_utils.data import DATASETS
from dwlt_utils.engine import Precision, generator_for
from dwlt_utils.models import build_model
from dwlt_utils.train import ADV_TRANSFER_CIFAR, make_optimizer, train_step

CIFAR = DATASETS["cifar10"]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def test_one_adversarial_step_of_the_engine_equals_the_reference_loop():
    torch.manual_seed(0)
    model = build_model("resnet50", CIFAR.num_classes, CIFAR.mean, CIFAR.std)
    reference = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.tensor([3, 7])
    boxes = sample_boxes(2, 32, 32, generator=g)
    flips = torch.tensor([True, False])
    # The engine crops the whole batch in one resampling call; torchvision crops image by image. The two
    # agree to interpolation precision (PIL's crop of the same box also rounds to 8 bits: test_augment.py).
    batch = crop_resize(images, boxes, 224, flips)
    torchvision_batch = torch.stack(
        [
            (TF.hflip if flip else (lambda t: t))(
                TF.resized_crop(img.float() / 255, *box.tolist(), [224, 224], antialias=True)
            )
            for img, box, flip in zip(images, boxes, flips)
        ]
    )
    assert (batch - torchvision_batch).abs().max().item() < 1e-5
    # The steps then start from that one batch: PGD's sign() turns even 1e-6 input differences into ±2/255
    # steps wherever a gradient is near zero, so two crops would give two different attacks, not a comparison.
    sgd = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
    ours_opt = torch.optim.SGD(model.parameters(), **sgd)
    ref_opt = torch.optim.SGD(reference.parameters(), **sgd)
    cpu = Precision.for_device("cpu")
    loss_sum, _ = train_step(
        model,
        batch,
        labels,
        ours_opt,
        attack=PGD10_TRAIN,
        masked=None,
        generator=generator_for(cpu.device, 5),
        precision=cpu,
    )
    ref_loss = bench.reference_train_step(
        reference, ref_opt, batch.clone(), labels, PGD10_TRAIN, generator_for(cpu.device, 5)
    )
    assert loss_sum.item() / 2 == pytest.approx(ref_loss, rel=1e-4)
    ref_state = reference.state_dict()
    for name, value in model.state_dict().items():
        if value.is_floating_point():  # weights, BatchNorm statistics (the attack ran in train mode on both)
            assert relative(value, ref_state[name]) <= 1e-4, name
        else:
            assert torch.equal(value, ref_state[name]), name


def test_cuda_only_settings_are_refused_on_a_cpu():
    from dwlt_utils.errors import InputError

    with pytest.raises(InputError, match="CUDA"):
        Precision.for_device("cpu", compile=True)
    with pytest.raises(InputError, match="CUDA"):
        Precision.for_device("cpu", channels_last=True)
    with pytest.raises(InputError, match="CUDA"):
        Precision.for_device("cpu", cuda_graphs=True)
    cpu = Precision.for_device("cpu")
    assert (cpu.bf16, cpu.channels_last, cpu.compile, cpu.cuda_graphs) == (False, False, False, False)


def test_the_bf16_autocast_step_computes_in_bf16_and_keeps_fp32_weights_and_inputs():
    # The CUDA default; the same autocast code runs on a CPU, so its plumbing is checked here too.
    bf16 = Precision.for_device("cpu", bf16=True)
    torch.manual_seed(0)
    model = build_model("small_resnet", 4, [0.5] * 3, [0.25] * 3)
    before = copy.deepcopy(model.state_dict())
    conv_dtypes, attacked = [], []
    model.model.conv1.register_forward_hook(lambda m, i, out: conv_dtypes.append(out.dtype))
    x = torch.rand(8, 3, 16, 16)
    y = torch.randint(0, 4, (8,))
    optimizer = make_optimizer(model, ADV_TRANSFER_CIFAR)

    def attack(net, images, labels, generator):
        attacked.append(PGD10_TRAIN(net, images, labels, generator))
        return attacked[-1]

    loss_sum, correct = train_step(
        model, x, y, optimizer, attack=attack, masked=None, generator=generator_for(bf16.device, 0), precision=bf16
    )
    assert set(conv_dtypes) == {torch.bfloat16} and len(conv_dtypes) == PGD10_TRAIN.steps + 1
    assert attacked[0].dtype == torch.float32
    assert (attacked[0] - x).abs().max().item() <= PGD10_TRAIN.eps + 1e-6
    assert torch.isfinite(loss_sum) and 0 <= correct.item() <= 8
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert all(p.dtype == torch.float32 for p in model.parameters()) and changed
