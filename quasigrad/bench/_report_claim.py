"""What every claim of the reproduction page shares: the `Claim` record, the three
verdicts, the rule that judges a claim only from a long enough run, and the cell formats
(`quasigrad.bench.report` and `quasigrad.bench._report_apps` build claims from them)."""

from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Sequence, Tuple

from .paper import DISPLAY_NAMES

__all__ = ["Claim", "REPRODUCED", "NOT_REPRODUCED", "NOT_RUN", "MIN_FRACTION", "pm", "pct", "name", "scale_words",
           "judge", "best"]

REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced", "not reproduced", "not run"
MIN_FRACTION = 0.1              # a claim is judged only from a run with this share of the paper's training


@dataclasses.dataclass
class Claim:
    """One published claim with our figures and the verdict."""

    title: str
    claim: str
    verdict: str
    reason: str
    paper: str = "–"
    ours: str = "–"
    scale: str = "–"
    table: Optional[Tuple[List[str], List[List[str]]]] = None
    source: Optional[str] = None
    points: List[Tuple[str, float, float]] = dataclasses.field(default_factory=list)


def pm(ms: Sequence[float], n: int = 0) -> str:
    """`mean ± std`; a single run (`n = 1`) has no spread to show."""
    return f"{ms[0]:.2f} (n = 1)" if n == 1 else f"{ms[0]:.2f} ± {ms[1]:.2f}"


def pct(fraction: float) -> str:
    """A fraction as a percentage with three significant digits."""
    return f"{100 * fraction:.3g}%"


def name(label: str) -> str:
    """An estimator's name as the papers' tables spell it (`stgs` → `STGS`)."""
    return DISPLAY_NAMES.get(label, label)


def scale_words(fraction: float, overrides: Sequence[str]) -> str:
    """How much of the paper's training a run had, and the settings it changed, in words."""
    words = "at the paper's training length" if fraction >= 1 else f"at {pct(fraction)} of the paper's training"
    return words + (f", with settings the paper does not use ({', '.join(overrides)})" if overrides else "")


def judge(out: Claim, holds: bool, lead: str, fraction: float, overrides: Sequence[str] = (),
          unsettled: str = "") -> Claim:
    """Set the verdict: the outcome when the run is long enough to judge the claim, else not run.

    Args:
        out: the claim to complete (changed in place).
        holds: whether our figures bear the claim out.
        lead: the outcome in words.
        fraction: our training as a share of the paper's.
        overrides: settings of ours that the paper does not use, in words.
        unsettled: why a run that falls short of the claim may still reach it (its figure still
            moving at its end), in words; such a run is not judged. Empty: none.

    Returns:
        `out`.
    """
    if fraction < MIN_FRACTION:
        out.verdict = NOT_RUN
        out.reason = (f"too short to judge: {pct(fraction)} of the paper's training (claims are judged from "
                      f"{pct(MIN_FRACTION)}); at that length {lead}")
    elif not holds and unsettled:
        out.verdict = NOT_RUN
        out.reason = f"too short to judge: {unsettled}; at that length {lead} ({scale_words(fraction, overrides)})"
    else:
        out.verdict = REPRODUCED if holds else NOT_REPRODUCED
        out.reason = f"{lead} ({scale_words(fraction, overrides)})"
    return out


def best(candidates: Sequence[Tuple[Any, ...]]) -> Any:
    """The candidate `(fraction, count, store, ...)` with the most training, then the most results."""
    return max(candidates, key=lambda c: (c[0], c[1], c[2].path)) if candidates else None
