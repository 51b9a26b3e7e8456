"""A report's verdicts in a few lines, read back from the CSVs it wrote (``claims.csv``,
``metg.csv``, ``predictions.csv``): what ``python -m research report`` prints when it is done,
so that a run's outcome shows in a terminal or a CI log without opening the HTML.

Reading the written files, not the report's frames, keeps this to the public outputs: the same
lines come from any report directory, an old one included, and a file the report did not write
(no granularity study, no calibration) just leaves its line out.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .claims import NOT_RUN
from .measure_report import METG_GOAL, PREDICTION_GOAL


def _read(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError):  # absent, or empty / not a CSV
        return None


def _flag(value: object) -> bool | None:
    """A boolean cell as read back from a CSV ("True", "False", empty: None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().lower()
    return True if text in ("true", "1", "1.0") else False if text in ("false", "0", "0.0") \
        else None


def claims_line(report_dir: Path) -> str | None:
    """'claims: N of M reproduced; <verdict>: ids' from ``claims.csv`` ('claims: none of M
    checked' where every claim is not run)."""
    c = _read(report_dir / "claims.csv")
    if c is None or c.empty or "verdict" not in c.columns:
        return None
    verdict = c["verdict"].astype(str)
    if (verdict == NOT_RUN).all():
        # A run of other configs (the user's own, `make holdout`), or one whose trials all
        # failed: a list of every id says nothing.
        return f"claims: none of {len(c)} checked (no trials of the studies they read)"
    line = f"claims: {int((verdict == 'reproduced').sum())} of {len(c)} reproduced"
    for v, g in c[verdict != "reproduced"].groupby(verdict[verdict != "reproduced"], sort=True):
        line += f"; {v}: {', '.join(g['claim_id'].astype(str))}"
    return line


def metg_line(report_dir: Path) -> str | None:
    """'METG predicted within 1.5x: N of M well-posed rows; misses ...' from ``metg.csv``."""
    m = _read(report_dir / "metg.csv")
    if m is None or m.empty or "within goal" not in m.columns:
        return None
    within = m["within goal"].map(_flag)
    held = m[within.notna()]
    ok = within[within.notna()].astype(bool)
    line = f"METG predicted within {METG_GOAL:g}x: {int(ok.sum())} of {len(held)} well-posed rows"
    miss = held[~ok.to_numpy()]
    if len(miss):
        parts = []
        for _, r in miss.iterrows():
            ratio = pd.to_numeric(r.get("predicted / measured"), errors="coerce")
            parts.append(f"{r['scheduler']} {r['body']} "
                         + (f"{ratio:.2f}x" if math.isfinite(ratio) else "(no predicted METG)"))
        line += "; misses " + ", ".join(parts)
    return line


def simulator_line(report_dir: Path) -> str | None:
    """'simulator: median |error| X% over N unseen trials; K of S schedulers within 5% at
    their defaults (misses ...)' from ``predictions.csv``: the trials the calibration never
    saw, per scheduler label; option variants (``name[...]``) are named apart."""
    p = _read(report_dir / "predictions.csv")
    if p is None or p.empty or not {"error", "in_calibration", "scheduler"} <= set(p.columns):
        return None
    seen = p["in_calibration"].map(_flag).fillna(False).astype(bool)
    unseen = p[~seen & pd.to_numeric(p["error"], errors="coerce").notna()]
    if unseen.empty:
        return None
    err = pd.to_numeric(unseen["error"], errors="coerce").abs()
    per = err.groupby(unseen["scheduler"].astype(str)).median()
    variant = per.index.str.contains("[", regex=False)
    base, variants = per[~variant], per[variant]
    line = (f"simulator: median |error| {err.median():.1%} over {len(unseen)} unseen trials; "
            f"{int((base <= PREDICTION_GOAL).sum())} of {len(base)} schedulers within "
            f"{PREDICTION_GOAL:.0%} at their defaults")
    missed = [f"{s} {v:.1%}" for s, v in base[base > PREDICTION_GOAL].items()]
    if missed:
        line += f" (misses {', '.join(missed)})"
    vmiss = [f"{s} {v:.1%}" for s, v in variants[variants > PREDICTION_GOAL].items()]
    if len(variants):
        line += (f"; option variants: {len(variants) - len(vmiss)} of {len(variants)}"
                 + (f" (misses {', '.join(vmiss)})" if vmiss else ""))
    return line


def headline(report_dir: Path | str) -> list[str]:
    """The lines for the report in ``report_dir`` (claims, METG, simulator), each only where
    its file is there."""
    d = Path(report_dir)
    lines = (claims_line(d), metg_line(d), simulator_line(d))
    return [x for x in lines if x]


__all__ = ["claims_line", "headline", "metg_line", "simulator_line"]
