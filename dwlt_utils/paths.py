"""The run-root layout: every directory and file name that dwlt writes is defined here and nowhere else.

    <run_root>/
      sources/<profile>/<source>/backbone.pt        θ_p of one pre-training (notebook 01), with backbone.pt.json
      sources/<profile>/<source>/train/             the run that pre-trained it (sources pre-trained here only)
      tickets/imp/<hash>/seed_<s>/                  an IMP ladder (notebook 02): config.json and its levels
        level_XX/                                   mask.pt, sparsity.json, ticket.pth.tar (the official layout)
        level_XX/train/                             the run that trains level XX into level XX + 1
      tickets/<profile>/<source>/omp/sparsity_S/    a one-shot magnitude ticket, made when first asked for
      tickets/<profile>/<source>/random/seed_<s>/sparsity_S/    a random ticket
      transfer/<hash>/seed_<s>/                     one table cell (notebooks 03-05)
      executed/                                     executed notebooks of the demo and the sweeps

A run directory (a training or a transfer cell) holds `config.json` (its full configuration), `metrics.csv`
(one row per epoch), `resume.pt` (the state to resume from), `best_sa.pt` / `best_ra.pt` (the checkpoints
kept on validation), `train_indices.json` (the training images used), `records.csv` (the results),
`autoattack-<N>.csv` (AutoAttack beside PGD-20 on its first N test images, when asked for) and `.lock` (held
while it trains). `<hash>` is the configuration's identity (`config.config_hash`); replicates
of one configuration differ in `seed_<s>` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import config_hash
from .errors import InputError
from .vocabulary import source_key

RECORDS = "records.csv"  # the name `results.load` collects under a root
AUTOATTACK_RECORDS = "autoattack-*.csv"  # a cell's AutoAttack checks, apart from its records
CORRUPTION_RECORDS = "corruptions.csv"  # a cell's accuracy on corrupted test sets, apart from its records


# Files of a run directory
def config_file(run: Path) -> Path:
    return Path(run) / "config.json"


def records_file(run: Path) -> Path:
    return Path(run) / RECORDS


def autoattack_file(run: Path, images: int) -> Path:
    """The records of a cell's AutoAttack check on its first `images` test images."""
    return Path(run) / AUTOATTACK_RECORDS.replace("*", str(images))


def corruption_file(run: Path) -> Path:
    return Path(run) / CORRUPTION_RECORDS


def metrics_file(run: Path) -> Path:
    return Path(run) / "metrics.csv"


def resume_file(run: Path) -> Path:
    return Path(run) / "resume.pt"


def checkpoint_file(run: Path, selection: str) -> Path:
    """The weights kept for a checkpoint selection (`best_sa`, `best_ra`)."""
    return Path(run) / f"{selection}.pt"


def train_indices_file(run: Path) -> Path:
    return Path(run) / "train_indices.json"


def lock_file(run: Path) -> Path:
    return Path(run) / ".lock"


def rank_error_file(run: Path, rank: int) -> Path:
    """What stopped one rank of a run on several processes (`distributed`)."""
    return Path(run) / f"rank_{rank}.error"


def rank_error_files(run: Path) -> list[tuple[int, Path]]:
    """(rank, file) of every rank of a run that wrote why it stopped, lowest rank first."""
    found = ((int(p.name[5:-6]), p) for p in Path(run).glob("rank_*.error") if p.name[5:-6].isdigit())
    return sorted(found)


# Files of a mask directory
def mask_file(directory: Path) -> Path:
    return Path(directory) / "mask.pt"


def sparsity_file(directory: Path) -> Path:
    return Path(directory) / "sparsity.json"


def official_ticket_file(directory: Path) -> Path:
    """The mask in the layout the official code reads (`pruning.export_ticket`)."""
    return Path(directory) / "ticket.pth.tar"


def results_readme(folder: Path) -> Path:
    """What made the committed tables and figures of a results folder (`cli results`)."""
    return Path(folder) / "README.md"


def checksums_file(weights_dir: Path) -> Path:
    """The user's register of checkpoint hashes, in `sha256sum`'s output format (`checkpoints.read_checksums`)."""
    return Path(weights_dir) / "SHA256SUMS"


def sidecar_file(path: Path) -> Path:
    """The JSON record written beside a converted checkpoint."""
    return Path(f"{path}.json")


# Directories
def slug(parameters: dict) -> str:
    """A file name made of notebook parameters: how sweeps and row commands name executed notebooks."""
    text = "_".join(f"{k}-{v}" for k, v in parameters.items()) or "defaults"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def run_dir(root: Path, kind: str, config: Any, seed: int) -> Path:
    """`<root>/<kind>/<hash>/seed_<seed>/`: a run identified by its configuration and seed."""
    return Path(root) / kind / config_hash(config) / f"seed_{seed}"


def executed_dir(run_root: Path) -> Path:
    """Where the demo and the sweeps keep the notebooks they executed."""
    return Path(run_root) / "executed"


def level_dir(ladder: Path, level: int) -> Path:
    return Path(ladder) / f"level_{level:02d}"


def level_training_dir(ladder: Path, level: int) -> Path:
    """Where level `level` trains into level `level` + 1 (an interrupted ladder resumes there)."""
    return level_dir(ladder, level) / "train"


# What a run root holds, for readers that look at all of it (`costs` prices from it)
def recorded_transfer_runs(run_root: Path) -> list[Path]:
    """The transfer runs under a run root that wrote records."""
    return sorted(p.parent for p in Path(run_root).glob(f"transfer/*/seed_*/{RECORDS}"))


def imp_ladders(run_root: Path) -> list[Path]:
    return sorted(p.parent for p in Path(run_root).glob("tickets/imp/*/seed_*/config.json"))


def level_trainings(ladder: Path) -> list[Path]:
    """The training runs of a ladder's levels, lowest level first."""
    return sorted(p for p in Path(ladder).glob("level_*/train") if p.is_dir())


def resolve_folder(name: str, value: str | Path, base: Path | None = None) -> Path:
    """A folder parameter as a path, relative ones taken from `base` when given (else the current directory);
    refused when it is not a path or names something that is not a folder."""
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise InputError(f"{name} is a folder path; got {value!r}.")
    folder = Path(value).expanduser()
    folder = base / folder if base is not None and not folder.is_absolute() else folder
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{name} {folder} is a file, not a folder; give a folder (it is created when missing).")
    return folder


@dataclass(frozen=True)
class Roots:
    """The three folders a notebook works with, and where each of its inputs and runs lives under them."""

    data_root: Path
    run_root: Path
    weights_dir: Path = Path("weights")

    @classmethod
    def create(cls, data_root: str, run_root: str, weights_dir: str = "weights", *, base: Path | None = None) -> Roots:
        """Validated folders; relative ones are taken from `base` when given (else the current directory)."""
        return cls(
            resolve_folder("data_root", data_root, base),
            resolve_folder("run_root", run_root, base),
            resolve_folder("weights_dir", weights_dir, base),
        )

    def source(self, profile: str, pretraining: str, eps_255: float) -> Path:
        """The backbone file of a dense source of one profile."""
        return self.run_root / "sources" / profile / source_key(pretraining, eps_255) / "backbone.pt"

    def source_training_dir(self, profile: str, pretraining: str, eps_255: float) -> Path:
        return self.source(profile, pretraining, eps_255).parent / "train"

    def imp_ladder(self, config: Any, seed: int) -> Path:
        return run_dir(self.run_root / "tickets", "imp", config, seed)

    def imp_level(self, config: Any, seed: int, level: int) -> Path:
        return level_dir(self.imp_ladder(config, seed), level)

    def one_shot(self, profile: str, pretraining: str, eps_255: float, method: str, sparsity: float, seed: int) -> Path:
        """The directory of a one-shot ticket; magnitude pruning needs no seed, random pruning does."""
        base = self.run_root / "tickets" / profile / source_key(pretraining, eps_255)
        base = base / "omp" if method == "magnitude" else base / "random" / f"seed_{seed}"
        return base / f"sparsity_{sparsity:.4f}"

    def transfer_cell(self, config: Any, seed: int) -> Path:
        return run_dir(self.run_root, "transfer", config, seed)
