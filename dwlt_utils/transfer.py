"""Notebooks 03-05: one table cell of transfer, with its dense baseline.

A cell is (pre-training, data set, regime, ticket, data budget) and the recipe that trains it
(PROTOCOL.md sections 4-6): the ticket applied to θ_p, a fresh classifier, fine-tuning on the downstream
training split, checkpoints kept on validation, SA (and RA) on the test split. It runs in its own run
directory (`paths.Roots.transfer_cell`), resumes from its last finished epoch, and writes tidy records; a
cell whose records exist is read back, not recomputed (unless forced).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn as nn

from . import io, paths, plotting, results, sources, vocabulary
from .batches import ArrayBatches
from .config import config_hash, write_config
from .data import DatasetInfo, ImageArrays, check_trainable, dataset_info, limit_train, load_splits, missing_phrase
from .errors import DwltError, InputError, MissingInputError, check_choice, check_number
from .evaluate import evaluate
from .models import backbone_holding, replace_fc, with_normalization
from .notebook import Session
from .paths import Roots
from .profiles import PROFILES, Profile
from .pruning import Mask, level_for_sparsity, printed_sparsity
from .tickets import ImpConfig, imp_ticket, imp_ticket_missing, one_shot_ticket
from .train import TrainConfig, fit, load_selected, read_metrics
from .vocabulary import PRETRAININGS, REGIMES, STD_BUDGET_DEVIATION, STD_DATA, SUBSETS, TICKETS, source_key


@dataclass(frozen=True)
class TransferConfig:
    """One table cell: (pre-training, data set, regime, ticket, data budget) and the recipe that trains it."""

    profile: str
    pretraining: str
    source_eps_255: float
    dataset: str  # the paper's data set; a profile with stand-ins trains on the stand-in
    regime: str
    ticket: str
    level: int
    imp: ImpConfig | None  # the ladder an IMP ticket comes from
    ticket_seed: int  # IMP and random tickets: which replicate
    data_fraction: float
    subset: str
    recipe: TrainConfig
    # Caps on the images evaluated (0: all): a first sanity run on a GPU, or a rehearsal; fewer is a deviation.
    val_images: int = 0
    test_images: int = 0

    @classmethod
    def create(
        cls,
        *,
        profile: Profile,
        pretraining: str,
        dataset: str,
        regime: str,
        ticket: str,
        sparsity: float,
        source_eps_255: float = 4,
        imp_variant: str = "auto",
        imp_epochs: int = 0,
        imp_processes: int = 1,
        imp_precision: str = "fp32",
        imp_decoder: str = "auto",
        ticket_seed: int = 1,
        data_fraction: float = 1.0,
        subset: str = "first",
        std_data: str = "budget",
        epochs: int = 0,
        eps_255: float = 8,
        train_steps: int = 10,
        eval_steps: int = 20,
        val_images: int = 0,
        test_images: int = 0,
    ) -> TransferConfig:
        """Validate notebook parameters and resolve them into a cell; raises one clear sentence."""
        check_choice("pre-training", pretraining, PRETRAININGS)
        profile.dataset(dataset)  # validates the name (and that the profile can run it)
        check_choice("regime", regime, REGIMES)
        check_choice("ticket", ticket, TICKETS)
        check_number("data_fraction", data_fraction, 0, 1, low_open=True)
        used = dataset_info(profile.dataset(dataset))
        check_trainable("data_fraction", data_fraction, used.train_size, f"{used.name} training images")
        check_choice("subset", subset, SUBSETS)
        check_choice("std_data", std_data, STD_DATA)
        if regime == "std" and std_data == "all":  # the official code: the full-data cell, whatever the budget
            data_fraction, subset = 1.0, "first"
        check_number("epochs", epochs, 0, 10_000, integer=True)
        check_number("ticket_seed", ticket_seed, 0, 2**31 - 1, integer=True)
        for name, value in (("eps_255", eps_255), ("source_eps_255", source_eps_255)):
            check_number(name, value, 0, 255)
        profile.check_source_eps(pretraining, source_eps_255)
        check_number("train_steps", train_steps, 1, 1000, integer=True)
        check_number("eval_steps", eval_steps, 1, 1000, integer=True)
        check_number("val_images", val_images, 0, used.val_size, integer=True)
        check_number("test_images", test_images, 0, 10**7, integer=True)
        if ticket == "dense":
            level = 0
            if sparsity not in (0, 0.0):
                raise InputError(f"A dense cell has sparsity 0; got {sparsity!r} (choose ticket imp, omp or random).")
        else:
            level = level_for_sparsity(sparsity)
            if level == 0:
                raise InputError("Sparsity 0 is the dense model: use ticket 'dense'.")
        imp_config = (
            ImpConfig.create(
                profile=profile,
                pretraining=pretraining,
                source_eps_255=source_eps_255,
                variant=imp_variant,
                epochs_per_level=imp_epochs,
                processes=imp_processes,
                precision=imp_precision,
                decoder=imp_decoder,
            )
            if ticket == "imp"
            else None
        )
        recipe = profile.transfer_recipe(regime, dataset)
        if epochs and epochs != recipe.epochs:
            recipe = recipe.shortened(epochs)
        if recipe.attack is not None:
            recipe = replace(
                recipe,
                attack=replace(recipe.attack, eps_255=eps_255, alpha_255=eps_255 / 4, steps=train_steps),
                val_attack=replace(recipe.val_attack, eps_255=eps_255, alpha_255=eps_255 / 4, steps=eval_steps),
            )
        return cls(
            profile.name,
            pretraining,
            vocabulary.source_eps_255(pretraining, source_eps_255),
            dataset,
            regime,
            ticket,
            level,
            imp_config,
            ticket_seed if ticket in ("imp", "random") else 0,
            data_fraction,
            subset,
            recipe,
            0 if val_images == used.val_size else val_images,
            test_images,
        )

    @property
    def sparsity(self) -> float:
        """The ladder sparsity of the ticket as papers print it (0.9141); the exact one is in its mask report."""
        return printed_sparsity(self.level)

    def deviations(self) -> list[str]:
        """How this cell departs from its profile's protocol, in words (empty: it follows it)."""
        protocol = PROFILES[self.profile].transfer_recipe(self.regime, self.dataset)
        out = []
        if self.recipe.epochs != protocol.epochs:
            epochs = self.recipe.epochs
            out.append(f"{epochs} epoch{'s' * (epochs != 1)} instead of {protocol.epochs}")
        for name, ours, theirs in (
            ("training attack", self.recipe.attack, protocol.attack),
            ("evaluation attack", self.recipe.val_attack, protocol.val_attack),
        ):
            if ours != theirs:
                out.append(f"{name} {ours.describe()} instead of {theirs.describe()}")
        if self.regime == "std" and self.data_fraction < 1:
            out.append(STD_BUDGET_DEVIATION)
        if self.val_images:
            out.append(f"validated on the first {self.val_images:,} validation images only")
        if self.test_images:
            out.append(f"tested on the first {self.test_images:,} test images only")
        return out + (self.imp.deviations() if self.imp else [])

    def ticket_name(self) -> str:
        return (
            "dense" if self.ticket == "dense" else f"{self.ticket} ticket at {self.sparsity:.2%} (level {self.level})"
        )

    def describe(self) -> str:
        budget = "" if self.data_fraction == 1 else f", {self.data_fraction:g} of the training data ({self.subset})"
        return (
            f"{self.regime} transfer of {source_key(self.pretraining, self.source_eps_255)} to {self.dataset}, "
            f"{self.ticket_name()}{budget}, {self.profile} profile"
        )

    def dense(self) -> TransferConfig:
        """The dense baseline of this cell (same pre-training, data, regime and recipe)."""
        return replace(self, ticket="dense", level=0, imp=None, ticket_seed=0)


def check_regimes(regimes: list) -> list[str]:
    if not isinstance(regimes, (list, tuple)) or not regimes:
        raise InputError(f"regimes is a non-empty list of {list(REGIMES)}; got {regimes!r}.")
    for regime in regimes:
        check_choice("regime", regime, REGIMES)
    return list(dict.fromkeys(regimes))


def missing_inputs(config: TransferConfig, roots: Roots, *, download: bool = True) -> list[str]:
    """What a cell needs and does not find, each as a phrase that says how to provide it."""
    profile = PROFILES[config.profile]
    problems = [sources.missing(profile, config.pretraining, config.source_eps_255, roots)]
    if config.ticket == "imp":
        problems.append(imp_ticket_missing(config.imp, roots, config.ticket_seed, config.level))
    problems.append(missing_phrase(profile.dataset(config.dataset), roots.data_root, download=download))
    return [p for p in problems if p]


def require_inputs(config: TransferConfig, roots: Roots, *, download: bool = True) -> None:
    missing = missing_inputs(config, roots, download=download)
    if missing:
        raise MissingInputError("Cannot run this cell: " + "; ".join(missing) + ".")


def _ladder_precision(parameters: dict[str, Any], session: Session) -> dict[str, Any]:
    """The parameters with an `imp_precision` of "auto" read as the session's own: a ticket comes by default
    from the ladder that notebook 02 computes with the same `precision` on the same machine."""
    if parameters.get("imp_precision", "auto") == "auto":
        return {**parameters, "imp_precision": session.precision.name}
    return parameters


def plan(session: Session, *, regimes: list, download: bool = True, **parameters: Any) -> list[TransferConfig]:
    """The cells of one transfer notebook (one per regime), validated, with their inputs found; the
    parameters are `TransferConfig.create`'s."""
    parameters = _ladder_precision(parameters, session)
    cells = [
        TransferConfig.create(profile=session.profile, regime=regime, **parameters) for regime in check_regimes(regimes)
    ]
    for cell in cells:
        require_inputs(cell, session.roots, download=download)
    return cells


def describe_plan(cells: list[TransferConfig]) -> str:
    return "\n".join(
        f"cell: {cell.describe()}\n  deviations from the protocol: {'; '.join(cell.deviations()) or 'none'}"
        for cell in cells
    )


def ticket_mask(config: TransferConfig, roots: Roots) -> Mask | None:
    if config.ticket == "dense":
        return None
    if config.ticket == "imp":
        return imp_ticket(config.imp, roots, config.ticket_seed, config.level)
    method = "magnitude" if config.ticket == "omp" else "random"
    return one_shot_ticket(
        PROFILES[config.profile],
        config.pretraining,
        config.source_eps_255,
        method,
        config.sparsity,
        roots,
        seed=config.ticket_seed,
    )


def run_transfer(
    config: TransferConfig, session: Session, *, notebook: str, download: bool = True, force: bool = False
) -> pd.DataFrame:
    """Train and test one cell; returns its records (those on disk when the cell is already done)."""
    directory = session.roots.transfer_cell(config, session.seed)
    if not force and (finished := finished_records(config, directory)) is not None:
        return finished
    require_inputs(config, session.roots, download=download)
    with io.exclusive(paths.lock_file(directory)):  # parallel sweep jobs asking for one cell train it once
        if not force and (finished := finished_records(config, directory, quiet=False)) is not None:
            return finished
        return _train_and_test(config, session, directory, notebook=notebook, download=download, force=force)


def finished_records(config: TransferConfig, directory: Path, *, quiet: bool = True) -> pd.DataFrame | None:
    """The records of a finished cell: one per metric and kept checkpoint. A records file that lacks some or
    cannot be read does not finish a cell; unless `quiet`, that is said, and the cell is measured again (from
    its kept checkpoints when its training had finished)."""
    if not results.recorded(directory):
        return None
    expected = {(m, c) for c in config.recipe.keep for m in (("SA", "RA") if config.recipe.val_attack else ("SA",))}
    try:
        records = results.load(directory)
    except DwltError as err:
        problem = str(err)
    else:
        if len(records) == len(expected) and set(zip(records.metric, records.checkpoint)) == expected:
            return records
        problem = f"{paths.records_file(directory)} holds {len(records)} of the cell's {len(expected)} records."
    if not quiet:
        print(f"{problem} The cell is measured again.", flush=True)
    return None


def _train_and_test(
    config: TransferConfig, session: Session, directory: Path, *, notebook: str, download: bool, force: bool
) -> pd.DataFrame:
    profile, roots, precision, seed = PROFILES[config.profile], session.roots, session.precision, session.seed
    splits = load_splits(profile.dataset(config.dataset), roots.data_root, download=download)
    if config.data_fraction < 1:
        splits = limit_train(splits, config.data_fraction, config.subset, seed)
    splits = replace(
        splits,
        val=first_images(splits.val, config.val_images),
        test=first_images(splits.test, config.test_images),
    )
    model, backbone = cell_model(config, roots, splits.info, seed)
    mask = ticket_mask(config, roots)

    if force:
        for stale in directory.iterdir():  # a forced rerun starts from nothing
            if stale != paths.lock_file(directory):
                stale.unlink()
    deviations = config.deviations()
    write_config(
        paths.config_file(directory),
        config,
        seed=seed,
        notebook=notebook,
        deviations=deviations,
        cell=config.describe(),
        data_root=roots.data_root,
        run_root=roots.run_root,
    )
    io.write_json(paths.train_indices_file(directory), splits.train.indices.tolist())
    batches = {
        name: ArrayBatches(getattr(splits, name), profile.transforms, precision.device)
        for name in ("train", "val", "test")
    }
    result = fit(
        model,
        batches["train"],
        batches["val"],
        config.recipe,
        directory,
        seed=seed,
        mask=mask,
        precision=precision,
        progress=session.progress,
        label=f"{config.regime} transfer, {config.ticket_name()}",
    )

    started = time.perf_counter()
    rows = []
    for selection in config.recipe.keep:
        load_selected(model, result, selection)
        scores = evaluate(
            model.eval(),
            batches["test"],
            attack=config.recipe.val_attack,
            precision=precision,
            batch_size=profile.eval_batch_size,
        )
        for metric, value in scores.items():
            rows.append(
                dict(
                    metric=metric,
                    checkpoint=selection,
                    value=value,
                    attack=config.recipe.val_attack.describe() if metric == "RA" else "",
                )
            )
    wall = sum(row["wall_s"] for row in result.history) + time.perf_counter() - started
    info = splits.info
    records = [
        results.make_record(
            notebook=notebook,
            profile=config.profile,
            pretraining=config.pretraining,
            dataset=info.name,
            stands_for=config.dataset,
            regime=config.regime,
            data_fraction=config.data_fraction,
            subset=config.subset,
            ticket=config.ticket,
            level=config.level,
            sparsity=config.sparsity,
            seed=seed,
            deviations="; ".join(deviations),
            sparsity_denominator=_denominator(backbone),
            device=precision.describe(),
            precision=precision.name,
            git_rev=results.git_revision(),
            run_id=str(directory.relative_to(roots.run_root)),
            config_hash=config_hash(config),
            wall_s=wall,
            **row,
        )
        for row in rows
    ]
    results.write_records(directory, records)
    return results.to_frame(records)


def cell_model(config: TransferConfig, roots: Roots, info: DatasetInfo, seed: int) -> tuple[nn.Module, nn.Module]:
    """The cell's model before training (θ_p, a fresh classifier of the seed, the data set's normalisation
    inside) and its backbone."""
    profile = PROFILES[config.profile]
    backbone = backbone_holding(profile.arch, sources.load(profile, config.pretraining, config.source_eps_255, roots))
    replace_fc(backbone, info.num_classes, seed)
    return with_normalization(backbone, info.mean, info.std), backbone


def first_images(images: ImageArrays, n: int) -> ImageArrays:
    """The first n images (0: all of them)."""
    return images.take(torch.arange(min(n, len(images)))) if n else images


def _denominator(backbone: torch.nn.Module) -> str:
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    return f"all {sum(m.weight.numel() for m in convs):,} weights of the {len(convs)} backbone Conv2d layers"


def run_cell_with_dense(
    config: TransferConfig,
    session: Session,
    *,
    notebook: str,
    dense_baseline: bool = True,
    download: bool = True,
    force: bool = False,
) -> pd.DataFrame:
    """A cell and, when asked, its dense baseline (run once, then read from disk: `force` is the cell's)."""
    frames = [
        run_transfer(run, session, notebook=notebook, download=download, force=force and run == config)
        for run in with_dense(config, dense_baseline)
    ]
    return pd.concat(frames, ignore_index=True)


def with_dense(config: TransferConfig, dense_baseline: bool = True) -> list[TransferConfig]:
    """The runs of a cell: its dense baseline first when asked for (a dense cell is its own), then the cell."""
    return [config.dense(), config] if dense_baseline and config.ticket != "dense" else [config]


def run_plan(cells: list[TransferConfig], session: Session, *, notebook: str, **kwargs: Any) -> pd.DataFrame:
    """Every cell of a notebook's plan with its dense baseline (`run_cell_with_dense`'s options)."""
    return pd.concat(
        [run_cell_with_dense(cell, session, notebook=notebook, **kwargs) for cell in cells], ignore_index=True
    )


# The regimes each transfer notebook runs (05 takes them as its `regimes` parameter).
NOTEBOOK_REGIMES = {"03_std_transfer": ["std"], "04_adv_transfer": ["adv"]}


def notebook_runs(notebook: str, parameters: dict[str, Any], session: Session) -> list[tuple[TransferConfig, Path]]:
    """The runs a transfer notebook makes for these parameters (its notebook defaults filled in), dense
    baselines included, each with its run directory; parameters it cannot run raise their one sentence."""
    regimes = parameters["regimes"] if notebook == "05_data_limited" else NOTEBOOK_REGIMES[notebook]
    wanted = inspect.signature(TransferConfig.create).parameters
    arguments = {k: v for k, v in parameters.items() if k in wanted and k not in ("profile", "regime")}
    arguments = _ladder_precision(arguments, session)
    runs = [
        run
        for regime in check_regimes(regimes)
        for run in with_dense(
            TransferConfig.create(profile=session.profile, regime=regime, **arguments),
            parameters.get("dense_baseline", True),
        )
    ]
    return [(config, session.roots.transfer_cell(config, session.seed)) for config in runs]


def run_finished(config: TransferConfig, directory: Path) -> bool:
    """Whether a run's records are complete (what makes a notebook read it back instead of training it)."""
    return finished_records(config, directory) is not None


def results_table(records: pd.DataFrame) -> pd.DataFrame:
    """Records as a table: a row per regime and ticket (and data budget, when several), a column per metric
    and checkpoint."""
    index = ["regime", "ticket", "level", "sparsity"]
    if records.data_fraction.nunique() > 1:
        index.insert(0, "data_fraction")
    return records.pivot_table(index=index, columns=["metric", "checkpoint"], values="value")


def training_curves(records: pd.DataFrame, roots: Roots) -> plt.Figure | None:
    """The per-epoch log of every run behind these records, as one figure (None when there is none)."""
    logs = {}
    for run_id, rows in records.groupby("run_id", sort=False):
        row = rows.iloc[0]
        ticket = "dense" if row.ticket == "dense" else f"{row.ticket} {row.sparsity:.2%}"
        logs[f"{row.regime} · {ticket}"] = read_metrics(roots.run_root / run_id)
    return plotting.training_curves_figure(logs, records) if logs else None


def curve(
    cells: list[TransferConfig], roots: Roots, *, every_budget: bool = False
) -> tuple[plt.Figure | None, pd.DataFrame]:
    """The curve these cells add a point to, read from every record under the run root: same profile,
    pre-training, data set and regimes, at the cells' data budget and subset (or at every budget). Returns
    its figure and its table. A run directory of the run root that cannot be read is named and left out: the
    curve only shows the cell among its neighbours, and the cell's own records were read already."""
    first = cells[0]
    every = results.load(roots.run_root, skip_unreadable=True)
    keep = (
        (every.profile == first.profile)
        & (every.pretraining == first.pretraining)
        & (every.stands_for == first.dataset)
        & every.regime.isin([cell.regime for cell in cells])
    )
    if not every_budget:
        keep &= (every.data_fraction == first.data_fraction) & (every.subset == first.subset)
    rows = every[keep]
    if every_budget or first.data_fraction < 1:
        figure = plotting.data_limited_figure(rows)
    else:
        figure = plotting.transfer_figure(rows, first.regime)
    return figure, results_table(rows)
