"""The paper's figures drawn from tidy records, what each one is missing, in words, and the training curves
of single runs.

Every figure of the paper plots IMP tickets against the ladder sparsity, the dense model of the same
pre-training as a dashed line, and the highest double-win sparsity as a dotted vertical line. Figures of
records on stand-in data sets carry their profile's label in the title, so they cannot be mistaken for
paper results.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from .profiles import PROFILES
from .pruning import Mask
from .vocabulary import PRETRAINING_LABELS, PRETRAININGS, TRANSFER_DATASETS

PALETTE = dict(zip(PRETRAININGS, sns.color_palette("colorblind", len(PRETRAININGS))))
SPREAD = "±1 sd over seeds as bars and bands; hollow markers: one seed"


def _title(records: pd.DataFrame, what: str) -> str:
    """`what`, and the label of every profile among the records that trains on stand-in data sets."""
    lines = [what]
    for name in sorted(set(records.profile)):
        if PROFILES[name].stand_ins:
            part = records[records.profile == name]
            stand_ins = ", ".join(sorted({f"{d} for {s}" for d, s in zip(part.dataset, part.stands_for)}))
            lines.append(f"{PROFILES[name].label}: {stand_ins}")
    return "\n".join(lines)


def _sparsity_label(records: pd.DataFrame) -> str:
    """The sparsity axis as the architectures of the records' profiles name their prunable weights."""
    return " / ".join(sorted({PROFILES[name].architecture.axis_label for name in set(records.profile)}))


def _panel(
    ax, rows: pd.DataFrame, metric: str, thresholds: pd.DataFrame | None, stands_for: str, numbered: list[str]
) -> None:
    """One pre-training per colour: IMP tickets as a line with ±1 standard deviation over seeds (a hollow
    marker where one seed is all there is), the dense model as a dashed line in a ±1 sd band. Records of
    another precision, or that deviate otherwise from the protocol (`numbered`: the figure's `variants`), are
    drawn apart (dash-dotted), never averaged in."""
    # Per seed first (records of one seed that differ only in what a figure ignores are one value), then
    # over seeds.
    keys = ["pretraining", "precision", "deviations", "ticket", "sparsity"]
    per_seed = rows.groupby([*keys, "seed"], sort=False).value.mean()
    spread = per_seed.groupby(level=keys, sort=False).agg(["mean", "std", "size"]).reset_index()
    precisions = sorted(set(spread.precision))
    for (pretraining, precision, deviated), group in spread.groupby(
        ["pretraining", "precision", "deviations"], sort=False
    ):
        color = PALETTE[pretraining]
        style = "-" if precision == precisions[0] and deviated == numbered[0] else "-."
        label = PRETRAINING_LABELS[pretraining] + (f" ({precision})" if len(precisions) > 1 else "")
        label += _variant_number(deviated, numbered)
        curve = group[group.ticket == "imp"].sort_values("sparsity")
        if not curve.empty:
            x = 100 * curve.sparsity
            ax.errorbar(
                x, curve["mean"], yerr=curve["std"].fillna(0), fmt="o" + style, color=color, capsize=3, label=label
            )
            single = curve["size"] == 1
            ax.plot(x[single], curve["mean"][single], "o", color=color, markerfacecolor="white", zorder=3)
        dense = group[group.ticket == "dense"]
        if not dense.empty:
            mean, sd = dense["mean"].iloc[0], dense["std"].iloc[0]
            ax.axhline(mean, color=color, linestyle="--" if style == "-" else "-.", linewidth=1)
            if sd > 0:
                ax.axhspan(mean - sd, mean + sd, color=color, alpha=0.12, linewidth=0)
        if thresholds is not None:
            hit = thresholds[
                (thresholds.pretraining == pretraining)
                & (thresholds.stands_for == stands_for)
                & (thresholds.precision == precision)
            ]
            for value in hit.highest_sparsity.dropna():
                ax.axvline(100 * value, color=color, linestyle=":", linewidth=1.5)
    ax.set_xlabel(_sparsity_label(rows))
    ax.set_ylabel(f"{metric} (%)")


def variants(records: pd.DataFrame) -> list[str]:
    """The distinct deviations of records, the protocol's own (none) first: each is drawn as a line of its own."""
    return sorted(set(records.deviations), key=lambda deviations: (deviations != "", deviations))


def _variant_number(deviations: str, numbered: list[str]) -> str:
    """How a legend label names its variant: its number in the caption, when the figure has several."""
    return f" [{numbered.index(deviations) + 1}]" if len(numbered) > 1 else ""


def _variants_note(records: pd.DataFrame) -> str:
    """The caption line that names each numbered variant, when a figure has several."""
    found = variants(records)
    if len(found) < 2:
        return ""
    return "\n" + "; ".join(f"[{i}] {deviations or 'the protocol'}" for i, deviations in enumerate(found, 1))


def _grid(rows: int, columns: int) -> tuple[plt.Figure, list[list[plt.Axes]]]:
    """A figure of rows × columns panels of one size."""
    return plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False, constrained_layout=True)


def _pretraining_legend(ax: plt.Axes) -> None:
    if ax.get_legend_handles_labels()[0]:  # records of dense models alone draw no labelled line
        ax.legend(title="pre-training", fontsize="small")


def transfer_figure(
    records: pd.DataFrame, regime: str, *, adv_checkpoint: str = "best_ra", thresholds: pd.DataFrame | None = None
) -> plt.Figure | None:
    """SA vs sparsity (standard transfer) or SA and RA vs sparsity (adversarial), full training data,
    one column per data set; None when there are no such records."""
    checkpoint = "best_sa" if regime == "std" else adv_checkpoint
    rows = records[
        (records.regime == regime)
        & (records.data_fraction == 1.0)
        & (records.checkpoint == checkpoint)
        & records.ticket.isin(["imp", "dense"])
    ]
    if rows.empty:
        return None
    metrics = ["SA"] if regime == "std" else ["SA", "RA"]
    datasets = [d for d in TRANSFER_DATASETS if d in set(rows.stands_for)]
    fig, axes = _grid(len(metrics), len(datasets))
    for i, metric in enumerate(metrics):
        for j, stands_for in enumerate(datasets):
            ax = axes[i][j]
            part = rows[(rows.metric == metric) & (rows.stands_for == stands_for)]
            _panel(ax, part, metric, thresholds, stands_for, variants(rows))
            ax.set_title(f"{stands_for}: {metric}")
    _pretraining_legend(axes[0][0])
    what = "Standard transfer" if regime == "std" else f"Adversarial transfer ({checkpoint} checkpoint)"
    fig.suptitle(
        _title(rows, what)
        + f"\nIMP tickets (lines), dense model (dashed), highest double-win sparsity (dotted);\n{SPREAD}"
        + _variants_note(rows),
        fontsize="small",  # the captions fit a figure of one data set
    )
    return fig


def data_limited_figure(records: pd.DataFrame, *, adv_checkpoint: str = "best_ra") -> plt.Figure | None:
    """SA (standard) and SA/RA (adversarial) vs sparsity at each data fraction below 1; None without records."""
    rows = records[(records.data_fraction < 1.0) & records.ticket.isin(["imp", "dense"])]
    rows = rows[
        ((rows.regime == "std") & (rows.checkpoint == "best_sa"))
        | ((rows.regime == "adv") & (rows.checkpoint == adv_checkpoint))
    ]
    if rows.empty:
        return None
    panels = [
        (r, m)
        for r, m in (("std", "SA"), ("adv", "SA"), ("adv", "RA"))
        if not rows[(rows.regime == r) & (rows.metric == m)].empty
    ]
    fractions = sorted(set(rows.data_fraction))
    fig, axes = _grid(len(fractions), len(panels))
    for i, fraction in enumerate(fractions):
        for j, (regime, metric) in enumerate(panels):
            ax = axes[i][j]
            part = rows[(rows.data_fraction == fraction) & (rows.regime == regime) & (rows.metric == metric)]
            for stands_for in sorted(set(part.stands_for)):
                _panel(ax, part[part.stands_for == stands_for], metric, None, stands_for, variants(rows))
            ax.set_title(f"{fraction:g} of the training data: {regime} transfer {metric}")
    _pretraining_legend(axes[0][0])
    fig.suptitle(
        _title(rows, "Data-limited transfer")
        + f"\nIMP tickets (lines), dense model (dashed);\n{SPREAD}"
        + _variants_note(rows),
        fontsize="small",
    )
    return fig


def corruption_figure(table: pd.DataFrame) -> plt.Figure | None:
    """Accuracy against sparsity on the clean test split (solid) and on corrupted images (dashed: the mean over
    every corruption at severities 1-5; dotted: severity 5 alone), one colour per pre-training, dense models
    and IMP tickets: a panel per regime and metric, a row per data budget. `table` is
    `report.corruption_accuracy`; None when it is empty."""
    rows = table[table.ticket.isin(["imp", "dense"])]
    if rows.empty:
        return None
    panels = [
        (r, m) for r in ("std", "adv") for m in ("SA", "RA") if not rows[(rows.regime == r) & (rows.metric == m)].empty
    ]
    fractions, numbered = sorted(set(rows.data_fraction), reverse=True), variants(rows)
    fig, axes = _grid(len(fractions), len(panels))
    for i, fraction in enumerate(fractions):
        for j, (regime, metric) in enumerate(panels):
            ax = axes[i][j]
            panel = rows[(rows.data_fraction == fraction) & (rows.regime == regime) & (rows.metric == metric)]
            for (pretraining, deviated), cell in panel.groupby(["pretraining", "deviations"], sort=False):
                by_level = cell.groupby(["sparsity", "severity"]).value.mean().unstack("severity").sort_index()
                x, color = 100 * by_level.index, PALETTE[pretraining]
                label = PRETRAINING_LABELS[pretraining] + _variant_number(deviated, numbered)
                ax.plot(x, by_level[0], "o-", color=color, label=label)
                ax.plot(x, by_level.drop(columns=0).mean(axis=1), "s--", color=color)
                if 5 in by_level:
                    ax.plot(x, by_level[5], "v:", color=color)
            ax.set_title(f"{regime} transfer: {metric}" + (f", {fraction:g} of the data" if fraction < 1 else ""))
            ax.set_xlabel(_sparsity_label(panel))
            ax.set_ylabel(f"{metric} (%)")
    _pretraining_legend(axes[0][0])
    fig.suptitle(
        _title(rows, "Accuracy on corrupted test images")
        + "\nclean test split (solid), mean over the corruptions at severities 1-5 (dashed), severity 5 (dotted)"
        + _variants_note(rows),
        fontsize="small",
    )
    return fig


def missing_cells(records: pd.DataFrame, *, profile: str, datasets: tuple[str, ...]) -> list[str]:
    """Sentences naming the (pre-training, data set, regime) cells with no records at full data, and the
    ladder levels each recorded curve has, so a reader knows what a figure leaves out."""
    lines = []
    rows = records[(records.profile == profile) & (records.data_fraction == 1.0)]
    for regime, name in (("std", "Standard transfer"), ("adv", "Adversarial transfer")):
        part = rows[rows.regime == regime]
        for stands_for in datasets:
            absent = [p for p in PRETRAININGS if part[(part.pretraining == p) & (part.stands_for == stands_for)].empty]
            if len(absent) == len(PRETRAININGS):
                lines.append(f"{name}, {stands_for}: no records.")
            elif absent:
                lines.append(f"{name}, {stands_for}: no records for {', '.join(absent)}.")
            for p in PRETRAININGS:
                cell = part[(part.pretraining == p) & (part.stands_for == stands_for)]
                if cell.empty:
                    continue
                if cell[cell.ticket == "dense"].empty:
                    lines.append(f"{name}, {stands_for}, {p}: no dense baseline, so no double-win decision.")
                levels = sorted(set(cell[cell.ticket == "imp"].level))
                if levels:
                    lines.append(f"{name}, {stands_for}, {p}: IMP levels recorded {levels}.")
    return lines


def training_curves_figure(logs: dict[str, pd.DataFrame], records: pd.DataFrame) -> plt.Figure:
    """Per-epoch training loss, accuracies and, where validated, RA of several runs (`train.read_metrics`),
    one line each; `records` are the runs' records, which say what the runs are."""
    panels = [
        ("train_loss", "training loss", None),
        ("train_acc", "accuracy (%)", "training"),
        ("val_SA", "accuracy (%)", "validation SA"),
        ("val_RA", "validation RA (%)", None),
    ]
    shown = [
        (column, ylabel, what)
        for column, ylabel, what in panels
        if any(column in log and log[column].notna().any() for log in logs.values())
    ]
    axes_for = {ylabel: i for i, ylabel in enumerate(dict.fromkeys(ylabel for _, ylabel, _ in shown))}
    fig, axes = plt.subplots(
        1, len(axes_for), figsize=(4.6 * len(axes_for), 3.4), squeeze=False, constrained_layout=True
    )
    colors = dict(zip(logs, sns.color_palette("colorblind", len(logs))))
    for column, ylabel, what in shown:
        ax = axes[0][axes_for[ylabel]]
        for label, log in logs.items():
            if column in log and log[column].notna().any():
                style = "--" if what == "training" else "o-"
                name = label if what is None else f"{label}: {what}"
                ax.plot(log.epoch + 1, log[column], style, color=colors[label], label=name, markersize=3)
    for ax, ylabel in zip(axes[0], axes_for):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="x-small")
    fig.suptitle(_title(records, "Training curves (from each run's per-epoch log)"))
    return fig


def layer_sparsity_figure(masks: dict[str, Mask], title: str) -> plt.Figure:
    """Per-layer sparsity (layers in module order) of several masks of one backbone."""
    fig, ax = plt.subplots(figsize=(11, 3.6), constrained_layout=True)
    names = None
    for label, mask in masks.items():
        report = mask.layers()
        names = list(report)
        ax.plot(range(len(names)), [100 * layer["sparsity"] for layer in report.values()], ".-", label=label)
    ax.set_xticks(range(len(names)), [n.removesuffix(".weight") for n in names], rotation=90, fontsize=6)
    ax.set_ylabel("layer sparsity (%)")
    ax.set_title(title)
    ax.legend(fontsize="small", ncol=2)
    return fig
