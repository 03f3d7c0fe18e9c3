"""Notebooks 03-05: one table cell of transfer, with its dense baseline.

A cell is (pre-training, data set, regime, ticket, data budget) and the recipe that trains it
(PROTOCOL.md sections 4-6): the ticket applied to θ_p, a fresh classifier, fine-tuning on the downstream
training split, checkpoints kept on validation, SA (and RA) on the test split. It runs in its own run
directory (`paths.Roots.transfer_cell`), resumes from its last finished epoch, and writes tidy records; a
cell whose records exist is read back, not recomputed (unless forced).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn as nn

from . import io, paths, plotting, results, sources, vocabulary
from .augment import Transforms
from .autoattack import AutoAttackCheck
from .batches import ArrayBatches, Batches
from .config import config_hash, write_config
from .corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    STAND_IN_CORRUPTIONS,
    STAND_IN_WORDS,
    CorruptedSets,
    load_cifar10_c,
    stand_in_corruptions,
)
from .data import DatasetInfo, DataSplits, check_trainable, dataset_info, limit_train, load_splits
from .engine import Precision
from .errors import DwltError, InputError, MissingInputError, check_choice, check_number, phrase
from .evaluate import correct_per_image, evaluate
from .models import replace_classifier, sparsity_denominator, with_normalization
from .notebook import Parameters, Session
from .paths import Roots
from .profiles import PROFILES, Profile, quick_parameter
from .pruning import Mask, level_for_sparsity, printed_sparsity
from .tickets import ImpConfig, imp_ticket, one_shot_ticket
from .train import FitResult, TrainConfig, fit, load_selected, read_metrics
from .visda import VISDA_FOLDER, VisdaSplits, shifted_digits, visda_batches, visda_splits
from .vocabulary import (
    DATASET_LABELS,
    EXTRA_DATASETS,
    PRETRAININGS,
    REGIMES,
    RESOLUTION_32_DEVIATION,
    RESOLUTIONS,
    SELECTED_ON_TEST_DEVIATION,
    STD_BUDGET_DEVIATION,
    STD_DATA,
    SUBSETS,
    TEST_RESIZE_DEVIATION,
    TEST_TRANSFORMS,
    TICKETS,
    source_key,
)

CORRUPTED_DATASET = "cifar10"  # the data set whose test images CIFAR-10-C corrupts


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
    resolution: int = 224  # `vocabulary.RESOLUTIONS`
    test_transform: str = "resize_crop"  # `vocabulary.TEST_TRANSFORMS`

    @classmethod
    def create(cls, profile: Profile, regime: str, parameters: Mapping[str, Any]) -> TransferConfig:
        """The cell of one regime that a transfer notebook's parameters name (those it does not have keep the
        protocol's values), validated and resolved; raises one clear sentence."""

        def given(name: str, default: Any) -> Any:
            return parameters.get(name, default)

        pretraining, dataset, ticket = (parameters[name] for name in ("pretraining", "dataset", "ticket"))
        sparsity, source_eps_255 = parameters["sparsity"], given("source_eps_255", 4)
        data_fraction, subset, epochs = given("data_fraction", 1.0), given("subset", "first"), given("epochs", 0)
        ticket_seed, eps_255 = given("ticket_seed", 1), given("eps_255", 8)
        train_steps, eval_steps = given("train_steps", 10), given("eval_steps", 20)
        val_images, test_images = given("val_images", 0), given("test_images", 0)
        resolution, test_transform = given("resolution", 224), given("test_transform", "resize_crop")
        check_choice("pre-training", pretraining, PRETRAININGS)
        profile.dataset(dataset)  # validates the name (and that the profile can run it)
        check_choice("regime", regime, REGIMES)
        check_choice("ticket", ticket, TICKETS)
        check_number("data_fraction", data_fraction, 0, 1, low_open=True)
        used = dataset_info(profile.dataset(dataset))
        check_trainable("data_fraction", data_fraction, used.train_size, f"{used.name} training images")
        check_choice("subset", subset, SUBSETS)
        std_data = given("std_data", "budget")
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
        check_input_path(profile, dataset_info(dataset), resolution, test_transform)
        if dataset in EXTRA_DATASETS:
            check_extra_dataset(dataset, regime, data_fraction, test_transform)
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
                variant=given("imp_variant", "auto"),
                epochs_per_level=given("imp_epochs", 0),
                processes=given("imp_processes", 1),
                precision=given("imp_precision", "fp32"),
                decoder=given("imp_decoder", "auto"),
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
            resolution,
            test_transform,
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
        if self.resolution != 224:
            out.append(RESOLUTION_32_DEVIATION)
        if self.test_transform != "resize_crop":
            out.append(TEST_RESIZE_DEVIATION)
        if self.dataset in EXTRA_DATASETS:
            out.append(SELECTED_ON_TEST_DEVIATION)
        return out + (self.imp.deviations() if self.imp else [])

    @property
    def transforms(self) -> Transforms:
        """The input pipeline of the cell's resolution, with its test transform."""
        profile = PROFILES[self.profile]
        chosen = profile.transforms_32px if self.resolution == 32 else profile.transforms
        return chosen.without_center_crop() if self.test_transform == "resize" else chosen

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

    def notebook_parameters(self, notebook: str, seed: int, precision: str) -> Parameters:
        """The parameters of `notebook` (03-05) that make this run, with this seed and precision: `create`
        read backwards, those at their defaults left as they are."""
        profile = PROFILES[self.profile]
        protocol = profile.transfer_recipe(self.regime, self.dataset)
        values = {
            "quick": quick_parameter(self.profile),
            "seed": seed,
            "precision": precision,
            "pretraining": self.pretraining,
            "dataset": self.dataset,
            "ticket": self.ticket,
            "sparsity": self.sparsity if self.level else 0,
            "regimes": [self.regime],
            "data_fraction": self.data_fraction,
            "subset": self.subset,
            "epochs": self.recipe.epochs if self.recipe.epochs != protocol.epochs else 0,
            "val_images": self.val_images,
            "test_images": self.test_images,
            "resolution": self.resolution,
            "test_transform": self.test_transform,
        }
        if vocabulary.is_robust(self.pretraining):
            values["source_eps_255"] = self.source_eps_255
        if self.ticket in ("imp", "random"):
            values["ticket_seed"] = self.ticket_seed
        if self.recipe.attack is not None:
            attack, val_attack = self.recipe.attack, self.recipe.val_attack
            values.update(eps_255=attack.eps_255, train_steps=attack.steps, eval_steps=val_attack.steps)
        if self.imp is not None:
            values.update(self.imp.transfer_parameters(precision))
        return Parameters.of(notebook, values)


def check_input_path(profile: Profile, paper: DatasetInfo, resolution: Any, test_transform: Any) -> None:
    """Refuse, in one sentence, a resolution or test transform the cell cannot have (on the paper's data set,
    whatever stands in for it)."""
    check_choice("resolution", resolution, RESOLUTIONS)
    check_choice("test_transform", test_transform, TEST_TRANSFORMS)
    if resolution != 32:
        return
    if paper.native_size > 32:
        raise InputError(f"resolution 32 is for data sets of 32 px images; {paper.name} is not one: use 224.")
    if test_transform != "resize_crop":
        raise InputError("test_transform applies to 224 px inputs; at resolution 32 test images are used as they are.")
    profile.architecture.check_small_inputs()


def check_extra_dataset(dataset: str, regime: str, data_fraction: float, test_transform: str) -> None:
    """VisDA-2017 as the official code runs it, in one sentence otherwise."""
    label = DATASET_LABELS[dataset]
    if regime != "std":
        raise InputError(f"{label} is in standard transfer only, as in the official code; regimes must be ['std'].")
    if data_fraction != 1:
        raise InputError(f"{label} trains on all its training images, as in the official code; data_fraction is 1.")
    if test_transform != "resize_crop":
        raise InputError(f"{label} has its own test transform (Resize((224, 224)), as in the official code).")


def check_regimes(regimes: list) -> list[str]:
    if not isinstance(regimes, (list, tuple)) or not regimes:
        raise InputError(f"regimes is a non-empty list of {list(REGIMES)}; got {regimes!r}.")
    for regime in regimes:
        check_choice("regime", regime, REGIMES)
    return list(dict.fromkeys(regimes))


@dataclass(frozen=True)
class TransferPlan:
    """What a transfer notebook's parameters make: its cells (one per regime), every run they make (each
    cell's dense baseline first, when asked for) with its run directory, and the AutoAttack check asked for."""

    parameters: Parameters
    cells: tuple[TransferConfig, ...]
    runs: tuple[tuple[TransferConfig, Path], ...]
    check: AutoAttackCheck | None
    corruptions: bool  # also test every run's kept checkpoints on corrupted test sets
    inputs: Inputs = field(compare=False, repr=False)  # read on first use, shared by every step

    @property
    def notebook(self) -> str:
        return self.parameters.notebook

    def finished(self, config: TransferConfig, directory: Path) -> bool:
        """Whether a run's records are complete (what makes a notebook read it back instead of training it)."""
        return finished_records(config, directory) is not None

    def done(self) -> bool:
        """Whether every run is finished, with its AutoAttack check and corruption records when asked for."""
        return self.progress()[0]

    def progress(self) -> tuple[bool, float]:
        """Whether the plan is done, and the wall seconds its finished runs took: each run's records read once."""
        done, wall_s = True, 0.0
        for config, directory in self.runs:
            records = finished_records(config, directory)
            if records is None:
                done = False
                continue
            wall_s += float(records.wall_s.iloc[0]) if len(records) else 0.0
            done = (
                done
                and (self.check is None or self.check.done(config, directory))
                and (not self.corruptions or corruption_records(config, directory) is not None)
            )
        return done, wall_s

    def locks(self) -> list[Path]:
        """The locks its runs hold while one trains them."""
        return [paths.lock_file(directory) for _, directory in self.runs]

    def describe(self) -> str:
        return "\n".join(
            f"cell: {cell.describe()}\n  deviations from the protocol: {'; '.join(cell.deviations()) or 'none'}"
            for cell in self.cells
        )


def plan(session: Session, parameters: Parameters) -> TransferPlan:
    """The runs a transfer notebook (03-05) makes with these parameters, validated (one clear sentence on
    bad input); nothing is read from disk. An `imp_precision` of "auto" is the session's own: a ticket comes
    by default from the ladder that notebook 02 computes with the same `precision` on the same machine."""
    if parameters.get("imp_precision", "auto") == "auto":
        parameters = parameters.but(imp_precision=session.precision.name)
    regimes = check_regimes(parameters["regimes"])
    cells = [TransferConfig.create(session.profile, regime, parameters) for regime in regimes]
    dense_baseline = parameters.get("dense_baseline", True)
    for name in ("dense_baseline", "force", "download", "eval_corruptions"):
        if not isinstance(parameters.get(name, True), bool):
            raise InputError(f"{name} is True or False; got {parameters[name]!r}.")
    corruptions = parameters.get("eval_corruptions", False)
    if corruptions and cells[0].dataset != CORRUPTED_DATASET:
        raise InputError(
            f"eval_corruptions tests on CIFAR-10-C, the corrupted CIFAR-10 test images, so it is for "
            f"{CORRUPTED_DATASET} cells; dataset is {cells[0].dataset}."
        )
    runs = [run for cell in cells for run in with_dense(cell, dense_baseline)]
    check = AutoAttackCheck.create(
        session.profile, cells, parameters.get("eval_attack", "pgd20"), parameters.get("autoattack_images", 0)
    )
    directories = tuple((run, session.roots.transfer_cell(run, session.seed)) for run in runs)
    inputs = Inputs(session.roots, download=parameters.get("download", True))
    return TransferPlan(parameters, tuple(cells), directories, check, corruptions, inputs)


def with_dense(config: TransferConfig, dense_baseline: bool = True) -> list[TransferConfig]:
    """The runs of a cell: its dense baseline first when asked for (a dense cell is its own), then the cell."""
    return [config.dense(), config] if dense_baseline and config.ticket != "dense" else [config]


class Inputs:
    """What runs are made of, each read once, where it is loaded, and verified as it is read: θ_p of each
    pre-training, the ticket masks, the data sets. A missing or damaged one raises its one sentence there."""

    def __init__(self, roots: Roots, *, download: bool = True):
        self.roots, self.download = roots, download
        self._sources: dict[tuple, dict] = {}
        self._masks: dict[tuple, Mask | None] = {}
        self._splits: dict[str, DataSplits | VisdaSplits] = {}
        self._corrupted: dict[str, CorruptedSets] = {}

    def source(self, config: TransferConfig) -> dict[str, torch.Tensor]:
        """θ_p of the cell's pre-training."""
        key = (config.profile, config.pretraining, config.source_eps_255)
        if key not in self._sources:
            self._sources[key] = sources.load(PROFILES[config.profile], *key[1:], self.roots)
        return self._sources[key]

    def mask(self, config: TransferConfig) -> Mask | None:
        """The cell's ticket (None: the dense model); a one-shot ticket is made on first use."""
        key = (
            config.profile,
            config.pretraining,
            config.source_eps_255,
            config.ticket,
            config.level,
            config.imp,
            config.ticket_seed,
        )
        if key not in self._masks:
            self._masks[key] = self._ticket(config)
        return self._masks[key]

    def _ticket(self, config: TransferConfig) -> Mask | None:
        if config.ticket == "dense":
            return None
        if config.ticket == "imp":
            return imp_ticket(config.imp, self.roots, config.ticket_seed, config.level)
        method = "magnitude" if config.ticket == "omp" else "random"
        profile = PROFILES[config.profile]
        args = (profile, config.pretraining, config.source_eps_255, method, config.sparsity, self.roots)
        return one_shot_ticket(*args, seed=config.ticket_seed, source=lambda: self.source(config))

    def splits(self, config: TransferConfig) -> DataSplits | VisdaSplits:
        """The three splits of the data set the cell trains on (its stand-in in a profile that has one): image
        arrays, or VisDA-2017's image lists."""
        name = PROFILES[config.profile].dataset(config.dataset)
        if name not in self._splits:
            root = self.roots.data_root
            if name == VISDA_FOLDER:
                self._splits[name] = visda_splits(root)
            elif name == "digits_shifted":
                self._splits[name] = shifted_digits(load_splits("digits", root, download=self.download))
            else:
                self._splits[name] = load_splits(name, root, download=self.download)
        return self._splits[name]

    def corrupted(self, config: TransferConfig) -> CorruptedSets:
        """The corrupted test sets of the cell's data set: CIFAR-10-C (its files checked here, each set read when
        used), or the stand-in's own test images corrupted in a profile with stand-ins."""
        name = PROFILES[config.profile].dataset(config.dataset)
        if name not in self._corrupted:
            if reads_cifar10_c(config):
                self._corrupted[name] = load_cifar10_c(self.roots.data_root)
            else:
                self._corrupted[name] = stand_in_corruptions(self.splits(config).test)
        return self._corrupted[name]

    def require(self, configs: list[TransferConfig], *, corruptions: bool = False) -> None:
        """Read every input of these runs before any trains (the corrupted test sets too, when asked for). One
        problem raises its own sentence; several are said together in one."""
        problems: dict[str, DwltError] = {}
        reads = (self.source, self.mask, self.splits, *((self.corrupted,) if corruptions else ()))
        for config in configs:
            for read in reads:
                try:
                    read(config)
                except DwltError as err:  # missing or damaged, in the words of the load that found it
                    problems.setdefault(phrase(err), err)
        if len(problems) == 1:
            raise next(iter(problems.values()))
        if problems:
            raise MissingInputError("Cannot run this cell: " + "; ".join(problems) + ".")


def run_plan(plan: TransferPlan, session: Session) -> pd.DataFrame:
    """Every run of a plan: read back when finished (unless its notebook's `force` retrains its cells), else
    trained once its inputs are all read; returns their records."""
    force, inputs = plan.parameters.get("force", False), plan.inputs
    forced = [force and run in plan.cells for run, _ in plan.runs]
    to_train = [run for (run, d), f in zip(plan.runs, forced) if f or not plan.finished(run, d)]
    inputs.require(to_train, corruptions=plan.corruptions)
    frames = [
        run_transfer(run, session, notebook=plan.notebook, inputs=inputs, force=f)
        for (run, _), f in zip(plan.runs, forced)
    ]
    return pd.concat(frames, ignore_index=True)


def run_transfer(
    config: TransferConfig,
    session: Session,
    *,
    notebook: str,
    inputs: Inputs | None = None,
    force: bool = False,
) -> pd.DataFrame:
    """Train and test one run; returns its records (those on disk when the run is already done)."""
    directory = session.roots.transfer_cell(config, session.seed)
    if not force and (finished := finished_records(config, directory)) is not None:
        return finished
    inputs = inputs or Inputs(session.roots)
    with io.exclusive(paths.lock_file(directory)):  # parallel sweep jobs asking for one cell train it once
        if not force and (finished := finished_records(config, directory, quiet=False)) is not None:
            return finished
        return _train_and_test(config, session, directory, inputs, notebook=notebook, force=force)


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
    config: TransferConfig, session: Session, directory: Path, inputs: Inputs, *, notebook: str, force: bool
) -> pd.DataFrame:
    profile, roots, precision, seed = PROFILES[config.profile], session.roots, session.precision, session.seed
    splits = inputs.splits(config)
    batches, trained_on = cell_batches(config, splits, seed, precision.device)
    model, backbone, replaced, denominator = cell_model(config, inputs, splits.info, seed)
    mask = inputs.mask(config)
    if mask is not None and replaced:
        mask = mask.keeping_whole(replaced, backbone)

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
        parameters=config.notebook_parameters(notebook, seed, precision.name).changed(),
        deviations=deviations,
        cell=config.describe(),
        data_root=roots.data_root,
        run_root=roots.run_root,
    )
    io.write_json(paths.train_indices_file(directory), trained_on)
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
    rows = _test_rows(model, result, config, [({}, batches["test"])], precision, profile.eval_batch_size)
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
            sparsity_denominator=denominator,
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


def cell_batches(
    config: TransferConfig, splits: DataSplits | VisdaSplits, seed: int, device: torch.device
) -> tuple[dict[str, Batches], list[int]]:
    """The cell's train, validation and test batches (its data budget taken, its caps on the images evaluated
    applied) and the positions of its training images in the training split."""
    if isinstance(splits, VisdaSplits):  # image folders, read by PIL with the official transforms
        train = visda_batches(splits.train, None, device)
        val = visda_batches(None, splits.validation[: config.val_images or None], device)
        test = visda_batches(None, splits.test[: config.test_images or None], device)
        return dict(train=train, val=val, test=test), list(range(len(splits.train)))
    if config.data_fraction < 1:
        splits = limit_train(splits, config.data_fraction, config.subset, seed)
    arrays = dict(
        train=splits.train,
        val=splits.val.first(config.val_images),
        test=splits.test.first(config.test_images),
    )
    batches = {name: ArrayBatches(images, config.transforms, device) for name, images in arrays.items()}
    return batches, splits.train.indices.tolist()


def _test_rows(
    model: nn.Module,
    result: FitResult,
    config: TransferConfig,
    test_sets: Iterable[tuple[dict, Batches]],
    precision: Precision,
    batch_size: int,
) -> list[dict]:
    """SA, and RA under the cell's evaluation attack, of each kept checkpoint on each test set: a row per value,
    with the fields that name its test set."""
    attack = config.recipe.val_attack
    kept = {}  # each checkpoint read from disk once, however many test sets
    for selection in config.recipe.keep:
        load_selected(model, result, selection)
        kept[selection] = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    rows = []
    for fields, batches in test_sets:  # read one set at a time: CIFAR-10-C is 75 of them
        for selection, state in kept.items():
            model.load_state_dict(state)
            scores = evaluate(model.eval(), batches, attack=attack, precision=precision, batch_size=batch_size)
            rows += [
                dict(
                    fields,
                    metric=metric,
                    checkpoint=selection,
                    value=value,
                    attack=attack.describe() if metric == "RA" else "",
                )
                for metric, value in scores.items()
            ]
    return rows


class CellModel(NamedTuple):
    """A cell's model before training and what its records and its ticket need to know of it."""

    model: nn.Module  # θ_p with a fresh classifier of the seed, the data set's normalisation inside
    backbone: nn.Module
    replaced: list[str]  # the weights of θ_p replaced by fresh layers (the 32 px stem), which no ticket masks
    sparsity_denominator: str  # of θ_p's backbone, which the ticket's sparsity is a fraction of


def cell_model(config: TransferConfig, inputs: Inputs, info: DatasetInfo, seed: int) -> CellModel:
    """The cell's model before training (`CellModel`)."""
    arch = PROFILES[config.profile].architecture
    backbone = arch.holding(inputs.source(config))
    denominator = sparsity_denominator(backbone)
    replace_classifier(backbone, info.num_classes, seed)
    replaced = arch.fit_to_small_inputs(backbone, seed) if config.resolution == 32 else []
    return CellModel(with_normalization(backbone, info.mean, info.std), backbone, replaced, denominator)


def run_check(plan: TransferPlan, session: Session) -> pd.DataFrame:
    """The AutoAttack check's records of every adversarial run of a plan, measured once (each run must be
    finished) and then read from disk."""
    check, inputs = plan.check, plan.inputs
    frames = []
    for config, directory in plan.runs:
        if config.regime != "adv":
            continue
        cell_records = finished_records(config, directory)
        if cell_records is None:
            raise MissingInputError(f"The AutoAttack check needs the finished run in {directory}; run its cell first.")
        with io.exclusive(paths.lock_file(directory)):
            if not check.done(config, directory):
                _measure_check(check, config, session, inputs, directory, cell_records)
        frames.append(results.load(directory, check.file(directory).name))
    return pd.concat(frames, ignore_index=True)


def _measure_check(
    check: AutoAttackCheck,
    config: TransferConfig,
    session: Session,
    inputs: Inputs,
    directory: Path,
    cell_records: pd.DataFrame,
) -> None:
    profile = PROFILES[config.profile]
    splits = inputs.splits(config)
    test = splits.test.first(check.images)
    # fp32, as AutoAttack's reference runs: a low-precision attack can be a weaker one.
    precision = Precision.for_device(session.precision.device, bf16=False, channels_last=False)
    batches = ArrayBatches(test, config.transforms, precision.device)
    model = cell_model(config, inputs, splits.info, session.seed).model
    precision.prepare(model)
    rows = []
    for checkpoint in config.recipe.keep:
        load_selected(model, FitResult(directory), checkpoint)
        ra = cell_records[(cell_records.metric == "RA") & (cell_records.checkpoint == checkpoint)]
        fields = ra.iloc[0].drop(list(results.MEASURED)).to_dict()
        robust_under_all = None
        for attack, name in zip(check.attacks(config), check.attack_names(config)):
            started = time.perf_counter()
            _, robust = correct_per_image(
                model.eval(), batches, attack=attack, precision=precision, batch_size=profile.eval_batch_size
            )
            rows.append(check.record(fields, name, robust, time.perf_counter() - started))
            robust_under_all = robust if robust_under_all is None else robust_under_all & robust
        rows.append(check.record(fields, check.attack_names(config)[-1], robust_under_all, 0.0))
    results.write_records(directory, rows, check.file(directory))


def reads_cifar10_c(config: TransferConfig) -> bool:
    """Whether a run's corrupted test sets are CIFAR-10-C's (else its profile's stand-ins)."""
    return PROFILES[config.profile].dataset(config.dataset) == CORRUPTED_DATASET


def corruptions_of(config: TransferConfig) -> tuple[str, ...]:
    """The corruptions a run is tested on: CIFAR-10-C's, or its profile's stand-ins."""
    return CORRUPTIONS if reads_cifar10_c(config) else STAND_IN_CORRUPTIONS


def corruption_records(config: TransferConfig, directory: Path) -> pd.DataFrame | None:
    """A run's records on the corrupted test sets, when complete: each kept checkpoint's SA (and RA) on every
    corruption at every severity."""
    path = paths.corruption_file(directory)
    if not path.is_file():
        return None
    try:
        records = results.load(directory, path.name)
    except DwltError:
        return None
    corruptions = corruptions_of(config)
    metrics = ("SA", "RA") if config.recipe.val_attack else ("SA",)
    expected = {(m, k, c, s) for m in metrics for k in config.recipe.keep for c in corruptions for s in SEVERITIES}
    found = set(zip(records.metric, records.checkpoint, records.corruption, records.severity))
    return records if found == expected and len(records) == len(expected) else None


def run_corruptions(plan: TransferPlan, session: Session) -> pd.DataFrame:
    """The accuracy of every run of a plan on the corrupted test sets, measured once (each run must be
    finished) and then read from disk: records of their own, which no double-win decision reads."""
    frames = []
    for config, directory in plan.runs:
        clean = finished_records(config, directory)
        if clean is None:
            raise MissingInputError(f"Testing on corrupted images needs the finished run in {directory}; run it first.")
        with io.exclusive(paths.lock_file(directory)):
            if (found := corruption_records(config, directory)) is None:
                found = _measure_corruptions(config, session, plan.inputs, directory, clean)
        frames.append(found)
    return pd.concat(frames, ignore_index=True)


def _measure_corruptions(
    config: TransferConfig, session: Session, inputs: Inputs, directory: Path, clean: pd.DataFrame
) -> pd.DataFrame:
    precision = session.precision
    corrupted = inputs.corrupted(config)
    model = cell_model(config, inputs, inputs.splits(config).info, session.seed).model
    precision.prepare(model)
    test_sets = (
        (
            dict(corruption=c, severity=s),
            ArrayBatches(images, config.transforms, precision.device),
        )
        for c, s, images in corrupted.sets(config.test_images)
    )
    started = time.perf_counter()
    rows = _test_rows(
        model, FitResult(directory), config, test_sets, precision, PROFILES[config.profile].eval_batch_size
    )
    # The cell's own fields, from its records; a stand-in's corruptions say so beside the cell's deviations.
    fields = clean.iloc[0].drop(["metric", "checkpoint", *results.MEASURED]).to_dict()
    if corrupted.stand_in:
        fields["deviations"] = "; ".join(filter(None, [fields["deviations"], STAND_IN_WORDS]))
    wall = time.perf_counter() - started
    records = [results.make_record(**{**fields, **row}, wall_s=wall, git_rev=results.git_revision()) for row in rows]
    results.write_records(directory, records, paths.corruption_file(directory))
    return results.to_frame(records)


def corruption_table(records: pd.DataFrame, corrupted: pd.DataFrame) -> pd.DataFrame:
    """Accuracy on the clean test split (severity 0) and, per severity, its mean over the corruptions: a row per
    regime and ticket, a column per metric, checkpoint and severity."""
    both = pd.concat([records[records.run_id.isin(set(corrupted.run_id))], corrupted], ignore_index=True)
    index = ["regime", "ticket", "level", "sparsity"]
    return both.pivot_table(index=index, columns=["metric", "checkpoint", "severity"], values="value")


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
