"""The paper's figures from records: the spread over seeds drawn as error bars and bands, single seeds
marked, and precisions kept apart."""

import matplotlib

matplotlib.use("Agg")

import pytest
from matplotlib.container import ErrorbarContainer
from test_results import cell, frame

from dwlt_utils import plotting
from dwlt_utils.vocabulary import RESOLUTION_32_DEVIATION


def errorbars(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_tickets_carry_their_spread_over_seeds_and_a_single_seed_is_hollow():
    records = frame(
        *(cell(0, 95, 85, 50 + s, seed=s) for s in (1, 2, 3)),  # dense RA 52 ± 1
        *(cell(10, 96, 86, 49 + 2 * s, seed=s) for s in (1, 2, 3)),  # level 10 RA 53 ± 2
        cell(11, 96, 86, 48, seed=1),  # level 11: one seed
    )
    figure = plotting.transfer_figure(records, "adv")
    ra = figure.axes[1]  # rows SA, RA; one data set
    (bars,) = errorbars(ra)
    line, _, (segments,) = bars
    assert list(line.get_ydata()) == pytest.approx([53.0, 48.0])
    lengths = [abs(seg[1][1] - seg[0][1]) / 2 for seg in segments.get_segments()]
    assert lengths == pytest.approx([2.0, 0.0])  # sample sd over the three seeds; none for one seed
    hollow = [ln for ln in ra.lines if ln.get_markerfacecolor() == "white"]
    assert len(hollow) == 1 and list(hollow[0].get_ydata()) == [48.0]
    (band,) = ra.patches  # the dense model's ±1 sd band: 52 ± 1
    assert (band.get_y(), band.get_height()) == pytest.approx((51.0, 2.0))
    assert "±1 sd over seeds" in figure._suptitle.get_text()


def test_records_of_two_precisions_are_two_curves():
    bf16 = dict(device="cuda, bf16 autocast", precision="bf16")
    records = frame(
        cell(0, 95, 85, 50), cell(10, 96, 86, 51), cell(0, 95, 85, 45, **bf16), cell(10, 96, 86, 46, **bf16)
    )
    figure = plotting.transfer_figure(records, "adv")
    ra = figure.axes[1]
    means = sorted(line.get_ydata()[0] for line, _, _ in errorbars(ra))
    assert means == [46.0, 51.0]  # not their average
    assert sorted(ra.get_legend_handles_labels()[1]) == ["adversarial (bf16)", "adversarial (fp32)"]


def test_records_that_deviate_otherwise_are_curves_of_their_own_named_in_the_caption():
    at_32 = dict(deviations=RESOLUTION_32_DEVIATION)
    records = frame(
        cell(0, 95, 85, 50), cell(10, 96, 86, 51), cell(0, 90, 80, 40, **at_32), cell(10, 91, 81, 41, **at_32)
    )
    figure = plotting.transfer_figure(records, "adv")
    ra = figure.axes[1]
    assert sorted(line.get_ydata()[0] for line, _, _ in errorbars(ra)) == [41.0, 51.0]  # not their average
    assert sorted(ra.get_legend_handles_labels()[1]) == ["adversarial [1]", "adversarial [2]"]
    caption = figure._suptitle.get_text()
    assert "[1] the protocol" in caption and f"[2] {RESOLUTION_32_DEVIATION}" in caption
