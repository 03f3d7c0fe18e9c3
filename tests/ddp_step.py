"""One DDP training step on every rank of a torchrun job, for tests/unit/test_distributed.py:

    python -m torch.distributed.run --standalone --nproc_per_node=2 -m ddp_step OUT {plain,batchnorm,fail}

Every rank builds the same model and the same global batch (`step_inputs`), takes its shard of the batch
(`Ranks.shard`), and makes one step of the engine's `train_step` under the package's DDP wrapper; rank 0
saves the updated parameters to OUT.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from dwlt_utils import distributed
from dwlt_utils.engine import Precision, generator_for
from dwlt_utils.errors import InputError
from dwlt_utils.train import TrainConfig, make_optimizer, train_step

RECIPE = TrainConfig(epochs=1, batch_size=8, lr=0.1, weight_decay=5e-4)


def step_inputs(kind: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small convolutional network (with BatchNorm or without) and a global batch of 8, all seeded."""
    torch.manual_seed(0)
    norm = [nn.BatchNorm2d(4)] if kind == "batchnorm" else []
    model = nn.Sequential(nn.Conv2d(3, 4, 3), *norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(8, 3, 8, 8)
    y = torch.randint(0, 3, (8,))
    return model, x, y


def main(out: str, kind: str) -> None:
    ranks = distributed.init("cpu")
    if kind == "fail" and ranks.rank == 1:
        err = InputError("rank 1 was told to fail.")
        distributed.write_error(Path(out).parent, ranks, err)
        raise err
    model, x, y = step_inputs(kind)
    mine = ranks.shard(torch.arange(len(y)))
    precision = Precision.for_device("cpu")
    net = distributed.wrap(model, ranks, precision.device)
    optimizer = make_optimizer(model, RECIPE)
    generator = generator_for(precision.device, 0)
    train_step(net, x[mine], y[mine], optimizer, attack=None, masked=None, generator=generator, precision=precision)
    if ranks.main:
        torch.save({k: v.detach().clone() for k, v in model.named_parameters()}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
