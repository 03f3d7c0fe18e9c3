"""dwlt_utils: the package behind the Double-Win Lottery Tickets notebooks.

Notebooks orchestrate; everything testable lives here, in floors. A module imports only from the floors
below its own (tests/unit/test_layout.py holds the package to this order):

1. words and files: `errors`, `io`, `vocabulary` (the names of the paper's things and what they mean),
   `config` (typed configs and their hashes), `paths` (every directory and file name of a run root);
2. building blocks: `models`, `augment`, `engine`, `distributed` (processes of one run under DDP), `attacks`,
   `data`, `corruptions` (CIFAR-10-C and its stand-in), `nvimgcodec_jpeg` (JPEGs decoded by nvImageCodec),
   `batches`, `visda` (VisDA-2017's image lists),
   `evaluate`, `pruning`, `train`, `imp`, `checkpoints`, `results`;
3. the profiles (`profiles`: paper and quick) and what they draw (`plotting`);
4. what every notebook starts with (`notebook`): its parameters and its session;
5. one module per notebook step, each with its door from the notebook's parameters to its runs: `sources`
   (01), `tickets` (02; `imp_worker` runs one IMP level on each process of a torchrun job), `autoattack` (the
   AutoAttack check beside PGD-20 of 04-05), `transfer` (03-05), `commands` (a table row back to the
   commands that make it), `report` (06);
6. running many notebooks and entry points: `jobs` (the light job of one notebook execution), `sweeps`
   (executions as submitit jobs and their state), `search` (the threshold search), `bench` (the speed
   benchmark), `gpu_check` (the GPU check in one command), `costs` (what a run costs before it runs), `plans`
   (GPU-hours and wall time of a sweep, a search or the paper), `cli`, `prerequisites` (what `make install`
   brings beyond pip: the quick profile's data and the browser).
"""

__version__ = "0.1.0"
