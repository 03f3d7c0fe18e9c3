"""The engine computes what the official loop computes: one adversarial training step, side by side."""

import copy
import json
from dataclasses import replace

import pytest
import torch
import torchvision.transforms.functional as TF
from torch.utils._python_dispatch import TorchDispatchMode

from dwlt_utils import bench
from dwlt_utils.attacks import PGD10_TRAIN, PGD20_EVAL
from dwlt_utils.augment import QUICK_16, crop_resize, sample_boxes
from dwlt_utils.batches import ArrayBatches
from dwlt_utils.data import DATASETS, ImageArrays
from dwlt_utils.engine import Precision, generator_for
from dwlt_utils.evaluate import evaluate
from dwlt_utils.models import build_model
from dwlt_utils.pruning import one_shot_mask
from dwlt_utils.train import ADV_TRANSFER_CIFAR, make_optimizer, train_epoch, train_step

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


def test_bench_reports_every_field_of_a_figure(tmp_path):
    out = tmp_path / "bench.json"
    assert (
        bench.main(
            ["--device", "cpu", "--quick", "--px", "32", "--figures", "clean_train", "--batch", "2", "--json", str(out)]
        )
        == 0
    )
    (figure,) = json.loads(out.read_text())
    assert {
        "name",
        "px",
        "device",
        "batch",
        "ours_img_s",
        "reference_img_s",
        "ratio",
        "torch_version",
        "ours",
        "reference",
    } <= set(figure)
    assert figure["name"] == "clean_train" and figure["px"] == 32 and figure["device"] == "cpu"
    assert figure["ours_img_s"] > 0 and figure["reference_img_s"] > 0
    assert figure["ratio"] == pytest.approx(figure["ours_img_s"] / figure["reference_img_s"], rel=1e-2)


def test_cuda_only_settings_are_refused_on_a_cpu():
    from dwlt_utils.errors import InputError

    with pytest.raises(InputError, match="CUDA"):
        Precision.for_device("cpu", compile=True)
    with pytest.raises(InputError, match="CUDA"):
        Precision.for_device("cpu", channels_last=True)
    cpu = Precision.for_device("cpu")
    assert (cpu.bf16, cpu.channels_last, cpu.compile) == (False, False, False)


# Aten ops that make the host wait for the device: reading a value back (`.item()`, `bool(t)`, `t.tolist()`
# all end in `_local_scalar_dense`) or sizing an output by the data (boolean-mask indexing, nonzero, ...).
HOST_READS = {
    "aten._local_scalar_dense",
    "aten.nonzero",
    "aten.masked_select",
    "aten.equal",
    "aten.is_nonzero",
    "aten._unique2",
    "aten.unique_consecutive",
    "aten.unique_dim",
    "aten.repeat_interleave",
}


class HostReads(TorchDispatchMode):
    """Every host-reading aten op dispatched inside the block, in order. On a CPU nothing actually waits, but
    the ops are the ones that would stall a CUDA stream, so their absence here is their absence there."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        bool_index = name == "aten.index" and any(
            t is not None and t.dtype in (torch.bool, torch.uint8) for t in args[1]
        )
        if name in HOST_READS or bool_index:
            self.ops.append(name if not bool_index else "boolean-mask indexing")
        return func(*args, **(kwargs or {}))


def test_an_epoch_reads_nothing_back_from_the_device_until_its_end():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 20, 20), generator=g, dtype=torch.uint8)
    arrays = ImageArrays(images, torch.randint(0, 4, (40,), generator=g), torch.arange(40))
    cpu = Precision.for_device("cpu")
    batches = ArrayBatches(arrays, QUICK_16, cpu.device)
    torch.manual_seed(0)
    model = build_model("small_resnet", 4, [0.5] * 3, [0.25] * 3)
    masked = one_shot_mask(model.model, 0.5).bind(model.model)
    config = replace(ADV_TRANSFER_CIFAR, batch_size=16)  # three steps: 16, 16 and 8 images
    optimizer = make_optimizer(model, config)
    with HostReads() as epoch:
        metrics = train_epoch(
            model, batches, optimizer, config, masked=masked, generator=generator_for(cpu.device, 1), precision=cpu
        )
    # the loss and the accuracy, read once each when the epoch is over
    assert epoch.ops == ["aten._local_scalar_dense"] * 2, epoch.ops
    assert set(metrics) == {"train_loss", "train_acc"}
    with HostReads() as evaluation:
        evaluate(model.eval(), batches, attack=PGD20_EVAL, batch_size=16, precision=cpu)
    assert evaluation.ops == ["aten._local_scalar_dense"] * 2, evaluation.ops  # SA and RA


def test_the_host_read_detector_sees_the_reads_it_is_there_to_catch():
    x = torch.arange(6.0)
    with HostReads() as reads:
        x.sum().item()
        x[x > 2].sum()
        bool((x > 1).any())
        (x > 4).nonzero()
    assert reads.ops == [
        "aten._local_scalar_dense",
        "boolean-mask indexing",
        "aten._local_scalar_dense",
        "aten.nonzero",
    ]


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
