"""dwlt_utils: the package behind the Double-Win Lottery Tickets notebooks.

Notebooks orchestrate; everything testable lives here, in floors. A module imports only from the floors
below its own (tests/unit/test_layout.py holds the package to this order):

1. words and files: `errors`, `io`, `vocabulary` (the names of the paper's things and what they mean),
   `config` (typed configs and their hashes), `paths` (every directory and file name of a run root);
2. building blocks: `models`, `augment`, `engine`, `attacks`, `data`, `batches`, `evaluate`, `pruning`,
   `train`, `imp`, `checkpoints`, `results`;
3. the profiles (`profiles`: paper and quick) and what they draw (`plotting`);
4. the session every notebook starts (`notebook`);
5. one module per notebook step: `sources` (01), `tickets` (02), `transfer` (03-05) and `autoattack` (their
   AutoAttack check beside PGD-20), `report` (06);
6. running many cells and entry points: `jobs` (the light job of one cell), `sweeps` (cells as submitit jobs
   and their state), `search` (the threshold search), `bench` (the speed benchmark), `gpu_check` (the GPU
   check in one command), `costs` (what a run costs before it runs), `plans` (GPU-hours and wall time of a
   sweep, a search or the paper), `cli`, `prerequisites` (what `make install` brings beyond pip: the quick
   profile's data and the browser).
"""

__version__ = "0.1.0"
