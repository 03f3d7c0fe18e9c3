"""One IMP level on every process of a torchrun job, as `tickets.run_imp_ladder` starts it for a ladder of
several processes:

    python -m torch.distributed.run --standalone --nproc_per_node=N -m dwlt_utils.imp_worker SPEC LEVEL

SPEC is the ladder's trainer in JSON (its config, folders, device, precision, seed and inputs); each rank trains
its shards of level LEVEL under DDP and rank 0 saves the next level's mask. A rank that fails writes its one
sentence beside the level's training run, for the launcher to report.
"""

from __future__ import annotations

import json
import sys

import torch.distributed as dist

from . import distributed
from .tickets import LevelTrainer


def main(argv: list[str]) -> int:
    spec, level = json.loads(argv[0]), int(argv[1])
    ranks = distributed.init(spec["device"])
    try:
        LevelTrainer.from_spec(spec, ranks)(level)
    except BaseException as err:
        distributed.write_error(LevelTrainer.spec_training_dir(spec, level), ranks, err)
        raise
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
