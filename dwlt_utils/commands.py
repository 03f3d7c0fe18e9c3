"""From a row of notebook 06's tables back to the commands that make it.

Every transfer run keeps the notebook parameters that made it (`TransferConfig.notebook_parameters`, in its
`config.json`). A row's commands are one shell line: the fewest papermill commands whose runs cover every run
behind the row (`run_ids`; a ticket's command brings its dense baseline, and one notebook 05 command both
regimes), after a `mkdir -p` of the folders their executed notebooks go to.
Run from the checkout's root on the run root that made the row, they find every run done and change
nothing; on another run root they make the row. A paper cell not reproduced yet is named by the `cli search`
call that finds its threshold.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd

from . import io, paths, transfer
from .errors import DwltError
from .notebook import Parameters, open_session, shell_line
from .vocabulary import REGIMES


class RowCommands:
    """The commands of rows of one run root, each run's parameters read once. `folders` are the run_root and
    data_root every command is given (as notebook 06 was given them: relative ones stay relative)."""

    def __init__(self, run_root: Path, folders: dict[str, str]):
        self.run_root, self.folders = Path(run_root), folders
        self._made_by: dict[str, Parameters | None] = {}
        self._covers: dict[str, set[str]] = {}

    def made_by(self, run_id: str) -> Parameters | None:
        """The notebook parameters that made a run (None: a run recorded before runs kept them, or whose
        configuration is missing)."""
        if run_id not in self._made_by:
            try:
                config = io.read_json(paths.config_file(self.run_root / run_id))
            except DwltError:  # a run directory without its configuration cannot say how it was made
                config = {}
            given = config.get("parameters")
            self._made_by[run_id] = None if given is None else Parameters.of(config["notebook"], given)
        return self._made_by[run_id]

    def covers(self, parameters: Parameters) -> set[str]:
        """The runs one command makes, as run ids of this run root."""
        command = parameters.command()
        if command not in self._covers:
            here = parameters.but(run_root=str(self.run_root))
            planned = transfer.plan(open_session(here, device="cpu"), here)
            self._covers[command] = {str(d.relative_to(self.run_root)) for _, d in planned.runs}
        return self._covers[command]

    def of(self, run_ids: str) -> str:
        """The commands of a row, given the run ids behind it; "" when a run does not say how it was made."""
        wanted = set(run_ids.split())
        candidates = [self.made_by(run_id) for run_id in sorted(wanted)]
        if not wanted or None in candidates:
            return ""
        candidates += _both_regimes(candidates)
        chosen, left = [], set(wanted)
        while left:  # the command that covers most of what is left, until every run is covered
            best = max(candidates, key=lambda p: (len(self.covers(p) & left), -len(p.changed())))
            chosen.append(best)
            left -= self.covers(best)
        return shell_line(sorted((p.but(**self.folders) for p in chosen), key=lambda p: p.command()))


def _both_regimes(candidates: list[Parameters]) -> list[Parameters]:
    """Of commands alike but for their regimes, the one command that runs all of them."""
    merged: dict[str, tuple[Parameters, set[str]]] = {}
    for p in candidates:
        key = p.but(regimes=list(REGIMES)).command()
        first, regimes = merged.get(key, (p, set()))
        merged[key] = (first, regimes | set(p["regimes"]))
    return [p.but(regimes=[r for r in REGIMES if r in regimes]) for p, regimes in merged.values() if len(regimes) > 1]


def search_command(row: pd.Series, folders: dict[str, str], seeds: list[int]) -> str:
    """The `cli search` call that finds the threshold of a paper cell (its IMP ladder must exist)."""
    flags = [f"--pretraining {row.pretraining}", f"--dataset {row.stands_for}"]
    flags.append(f"--seeds {','.join(map(str, seeds))}")
    flags += [f"-p {name} {shlex.quote(value)}" for name, value in folders.items()]
    return "python -m dwlt_utils.cli search " + " ".join(flags)


def with_commands(table: pd.DataFrame, rows: RowCommands, *, seeds: list[int] | None = None) -> pd.DataFrame:
    """A table of `run_ids` rows with a `commands` column in their place. A row without runs (a paper cell
    not reproduced yet) gets the search that would reproduce it, on `seeds`."""
    if "run_ids" not in table:
        return table
    commands = [
        rows.of(run_ids) if isinstance(run_ids, str) and run_ids else search_command(row, rows.folders, seeds or [1])
        for run_ids, (_, row) in zip(table.run_ids, table.iterrows())
    ]
    return table.drop(columns="run_ids").assign(commands=commands)
