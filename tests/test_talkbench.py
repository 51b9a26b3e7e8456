"""The talk's timeit prime benchmark, on small numbers."""

from __future__ import annotations

import pandas as pd

from research.bench import talkbench


def test_every_method_times_and_agrees() -> None:
    table = talkbench.run([97, 91, 1_000_003], number=1, repeat=2)
    t = table.set_index("method")
    assert list(t.index) == ["straight", "threads", "processes", "futures_demo_first6"]
    for m in ("straight", "threads", "processes"):
        assert t.loc[m, "result"] == "[True, False, True]"
        assert len(t.loc[m, "runs_s"]) == 2 and t.loc[m, "best_s"] == min(t.loc[m, "runs_s"])
        assert t.loc[m, "talk_s"] == talkbench.TALK_SECONDS[m]
    assert t.loc["futures_demo_first6", "result"] == repr(talkbench.TALK_DEMO_RESULT)
    assert pd.isna(t.loc["futures_demo_first6", "best_s"])
