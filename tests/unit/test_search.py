"""The threshold search, end to end in the quick profile: real notebook 05 executions as local submitit jobs,
then every other level of the same ladder, so that the search's answer meets the exhaustive one on the
same records. Minutes on two cores: marked slow (`make test-slow`, which CI runs)."""

from __future__ import annotations

import pandas as pd
import pytest

from dwlt_utils import cli, report, results, tickets
from dwlt_utils.profiles import QUICK
from dwlt_utils.pruning import printed_sparsity

pytestmark = pytest.mark.slow

TOP = 4  # levels searched: 20% to 59% sparsity


def test_search_meets_the_exhaustive_threshold_with_fewer_executions(session, roots, plant_source, capsys):
    plant_source()
    common = ["-p", "quick", "True", "-p", "run_root", str(roots.run_root), "-p", "data_root", str(roots.data_root)]
    common += ["-p", "epochs", "1"]
    search = ["search", "--pretraining", "adv", "--dataset", "cifar10", "--levels", str(TOP), *common]
    assert cli.main(search) == 2  # no ladder yet
    assert "The search needs the IMP ladder up to level 4: the IMP ticket at level 4" in capsys.readouterr().err
    tickets.run_imp_ladder(tickets.ImpConfig.create(profile=QUICK, pretraining="adv"), session, levels=TOP)

    assert cli.main(search) == 0
    said = capsys.readouterr().out.splitlines()
    summary, decided = said[-1], [line for line in said if line.startswith("level ")]
    assert 1 <= len(decided) < TOP and f"executions of notebook 05 instead of {TOP + 1} for every level" in summary
    searched = results.load(roots.run_root)

    # Every level, as an exhaustive sweep of the same executions runs them: the levels the search decided are done
    fixed = [*common, "-p", "pretraining", "adv", "-p", "dataset", "cifar10", "-p", "data_fraction", "1.0"]
    fixed += ["-p", "regimes", "['std', 'adv']", "-p", "ticket", "imp"]
    grid = "sparsity=" + ",".join(str(printed_sparsity(k)) for k in range(1, TOP + 1))
    assert cli.main(["sweep", str(cli.NOTEBOOKS / "05_data_limited.ipynb"), *fixed, "--grid", grid]) == 0
    assert f"{TOP} executions, {len(decided)} done, running or queued; submitting {TOP - len(decided)}" in (
        capsys.readouterr().out
    )
    everything = results.load(roots.run_root)
    assert len(everything) > len(searched) and set(searched.run_id) <= set(everything.run_id)
    highest = results.highest_double_win(everything)
    assert len(highest) == 1
    exhaustive = 0 if pd.isna(highest.highest_level[0]) else int(highest.highest_level[0])
    if highest.failure_below[0]:  # double-win came back above a failure: bisection may differ, and 06 says so
        assert report.non_monotone(highest)
    elif exhaustive:
        assert f"highest double-win level {exhaustive} " in summary
    else:
        assert "no double-win level" in summary
    print(f"search decided {len(decided)} of {TOP} levels; exhaustive threshold: level {exhaustive}")
