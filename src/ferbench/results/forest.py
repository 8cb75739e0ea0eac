"""A forest plot of a table's judged claims: one line per claim x column, its effect and 95% CI, a zero line, the
verdict as marker and colour. Verdicts are strings the plot does not interpret: known ones get fixed styles, any
other a style of its own, assigned in the order they first appear."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ferbench.results.figures import _pyplot, _save

VERDICT_STYLES = {
    "holds": ("#2ca02c", "o"),
    "reversed": ("#d62728", "s"),
    "equivalent": ("#1f77b4", "D"),
    "inconclusive": ("#7f7f7f", "o"),
    "provisional": ("#ff7f0e", "^"),
}
OTHER_STYLES = (("#9467bd", "v"), ("#8c564b", "P"), ("#e377c2", "X"), ("#17becf", "*"), ("#bcbd22", "h"))


@dataclass(frozen=True)
class ForestLine:
    label: str
    effect: float
    low: float
    high: float
    verdict: str


def verdict_styles(verdicts: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Colour and marker per verdict; unknown verdicts cycle through ``OTHER_STYLES``."""
    styles, spare = {}, 0
    for verdict in dict.fromkeys(verdicts):
        if verdict in VERDICT_STYLES:
            styles[verdict] = VERDICT_STYLES[verdict]
        else:
            styles[verdict] = OTHER_STYLES[spare % len(OTHER_STYLES)]
            spare += 1
    return styles


def forest_figure(lines: Sequence[ForestLine], path: Path, title: str, unit: str = "points") -> Path:
    """``lines`` top to bottom, the effect (better − than) with its 95% CI; a line without a CI is a marker."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 0.32 * len(lines) + 1.5))
    styles = verdict_styles([line.verdict for line in lines])
    shown: set[str] = set()
    for y, line in zip(range(len(lines) - 1, -1, -1), lines, strict=True):
        colour, marker = styles[line.verdict]
        has_ci = math.isfinite(line.low) and math.isfinite(line.high)
        xerr = [[line.effect - line.low], [line.high - line.effect]] if has_ci else None
        label = None if line.verdict in shown else line.verdict
        shown.add(line.verdict)
        ax.errorbar(line.effect, y, xerr=xerr, fmt=marker, color=colour, capsize=3, markersize=6, label=label)
    ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(lines) - 1, -1, -1), [line.label for line in lines], fontsize=7)
    ax.set_ylim(-0.8, len(lines) - 0.2)
    ax.set_xlabel(f"effect (better − than), {unit}; bars: 95% CI", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="verdict", title_fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
