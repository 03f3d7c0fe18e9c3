"""dwlt_utils: the building blocks of the Double-Win Lottery Tickets companion.

One module per concern: `models`, `checkpoints`, `pruning`, `attacks`, `data`, `augment`, `train`,
`evaluate`, `config`, `results`. Notebooks orchestrate; everything testable lives here.
"""

__version__ = "0.1.0"
