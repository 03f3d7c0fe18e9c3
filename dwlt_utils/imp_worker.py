"""One IMP level on every process of a torchrun job, as `tickets.run_imp_ladder` starts it for a ladder of
several processes:

    python -m torch.distributed.run --standalone --nproc_per_node=N -m dwlt_utils.imp_worker JOB LEVEL

JOB is the ladder's job in JSON (its config, folders, device, precision, seed and inputs); each rank trains
its shards of level LEVEL under DDP and rank 0 saves the next level's mask. A rank that fails writes its one
sentence beside the level's training run, for the launcher to report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from . import distributed, paths
from .engine import Precision
from .paths import Roots
from .tickets import ImpConfig, LevelTrainer


def main(argv: list[str]) -> int:
    job, level = json.loads(argv[0]), int(argv[1])
    ranks = distributed.init(job["device"])
    config = ImpConfig(**job["config"])
    roots = Roots(*(Path(job["roots"][name]) for name in ("data_root", "run_root", "weights_dir")))
    folder = paths.level_training_dir(roots.imp_ladder(config, job["seed"]), level)
    try:
        device = f"cuda:{ranks.local}" if job["device"] == "cuda" else "cpu"
        precision = Precision.for_device(device, bf16=job["bf16"])
        imagenet_root = Path(job["imagenet_root"]) if job["imagenet_root"] else None
        progress = job["progress"] if ranks.main else "off"
        trainer = LevelTrainer(
            config, roots, precision, job["seed"], imagenet_root, job["workers"], progress, ranks, job["decoder"]
        )
        trainer(level)
    except BaseException as err:
        distributed.write_error(folder, ranks, err)
        raise
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
