"""Nothing inside a training step or an epoch's batching makes the host wait for the device (`host_sync`):
clean, PGD-k and masked steps, a DDP-wrapped step, array batches and every decoder of ImageNet's JPEGs. The
epoch reads its loss and accuracy once, at its end; evaluation its SA and RA."""

import socket
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
from host_sync import DeviceWaits
from torch.nn.parallel import DistributedDataParallel

from dwlt_utils.attacks import PGD20_EVAL
from dwlt_utils.augment import PAPER_224, QUICK_16, sample_boxes
from dwlt_utils.batches import DECODERS, ArrayBatches, jpeg_folder_batches
from dwlt_utils.data import ImageArrays
from dwlt_utils.engine import Precision, generator_for
from dwlt_utils.evaluate import evaluate
from dwlt_utils.models import build_model
from dwlt_utils.pruning import one_shot_mask
from dwlt_utils.train import ADV_TRANSFER_CIFAR, STD_TRANSFER, make_optimizer, train_epoch, train_step

from genuine_files import write_imagenet

CPU = Precision.for_device("cpu")


def small_data(n: int = 40) -> ArrayBatches:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 20, 20), generator=g, dtype=torch.uint8)
    return ArrayBatches(
        ImageArrays(images, torch.randint(0, 4, (n,), generator=g), torch.arange(n)), QUICK_16, CPU.device
    )


def small_model():
    torch.manual_seed(0)
    return build_model("small_resnet", 4, [0.5] * 3, [0.25] * 3)


def test_the_detector_sees_every_kind_of_wait_and_nothing_on_the_host():
    device = torch.device("cpu")
    on_device = torch.arange(6.0, device=device)
    with DeviceWaits() as watch:
        on_device.sum().item()
        on_device[on_device > 2].sum()
        bool((on_device > 1).any())
        (on_device > 4).nonzero()
        torch.as_tensor(224, dtype=torch.float32, device=device)  # a Python size copied over
        torch.tensor([1, 2]).to(device)  # a host tensor moved without non_blocking
        # host-side work a loader does is no wait, nor is a non-blocking move or a fill on the device
        torch.randperm(5, generator=torch.Generator().manual_seed(0)).tolist()
        labels = torch.tensor([3, 1]) + 1
        labels.tolist()
        labels.to(device, non_blocking=True)
        torch.full((3,), 224.0, device=device)
    assert watch.waits == [
        "item",
        "boolean-mask indexing",
        "__bool__",
        "nonzero",
        "as_tensor from Python data onto the device",
        "blocking to to the device",
    ]


@pytest.mark.parametrize("recipe", [ADV_TRANSFER_CIFAR, STD_TRANSFER], ids=["pgd10", "clean"])
def test_an_epoch_of_masked_steps_reads_back_only_its_loss_and_accuracy_at_its_end(recipe):
    batches, model = small_data(), small_model()
    masked = one_shot_mask(model.model, 0.5).bind(model.model)
    config = replace(recipe, batch_size=16)  # three steps: 16, 16 and 8 images
    optimizer = make_optimizer(model, config)
    with DeviceWaits() as epoch:
        metrics = train_epoch(
            model, batches, optimizer, config, masked=masked, generator=generator_for(CPU.device, 1), precision=CPU
        )
    assert epoch.waits == ["item", "item"], epoch.waits
    assert set(metrics) == {"train_loss", "train_acc"}
    with DeviceWaits() as evaluation:
        evaluate(model.eval(), batches, attack=PGD20_EVAL, batch_size=16, precision=CPU)
    assert evaluation.waits == ["item", "item"], evaluation.waits  # SA and RA


@pytest.fixture()
def process_group():
    """A one-process gloo group, so that DDP's own code runs in this process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_a_ddp_wrapped_pgd_step_waits_for_nothing(process_group):
    model = small_model()
    net = DistributedDataParallel(model)
    masked = one_shot_mask(model.model, 0.5).bind(model.model)
    optimizer = make_optimizer(model, ADV_TRANSFER_CIFAR)
    x, y = next(small_data().train(8, generator_for(CPU.device, 0)))
    generator = generator_for(CPU.device, 2)
    step = dict(attack=replace(ADV_TRANSFER_CIFAR.attack, steps=2), masked=masked, generator=generator, precision=CPU)
    train_step(net, x, y, optimizer, **step)  # DDP's first step builds its buckets
    with DeviceWaits() as watch:
        train_step(net, x, y, optimizer, **step)
    assert watch.waits == []


@pytest.mark.parametrize("decoder", DECODERS[1:])
def test_batching_imagenet_jpegs_waits_for_nothing_whatever_the_decoder(tmp_path, decoder):
    root = write_imagenet(tmp_path, classes=2, train_per_class=3, val_per_class=1)
    samples = [(str(p), int("1440765" in p.parent.name)) for p in sorted((root / "train").rglob("*.JPEG"))]
    batches = jpeg_folder_batches(samples, PAPER_224, CPU.device, 0, decoder)
    with DeviceWaits() as watch:
        served = [(x.shape, len(y)) for x, y in batches.train(4, generator_for(CPU.device, 1), drop_last=True)]
    assert served == [((4, 3, 224, 224), 4)]
    assert watch.waits == []


def test_boxes_for_one_size_or_each_images_size_are_drawn_on_the_device_alone():
    sizes = torch.tensor([[300.0, 400.0], [500.0, 375.0]])
    with DeviceWaits() as watch:
        sample_boxes(2, 32, 32, generator=generator_for(CPU.device, 0), device=CPU.device)
        sample_boxes(2, sizes[:, 0], sizes[:, 1], generator=generator_for(CPU.device, 0), device=CPU.device)
    assert watch.waits == []
