"""The report figures' shared look: matplotlib rc settings, trial status markers, PNG output."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

DPI = 120
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
         "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 13,
         "axes.grid": True, "grid.alpha": 0.3}  # fmt: skip
STATUS = {
    "completed": {"marker": "o", "color": "tab:blue", "label": "completed"},
    "early_stopped": {"marker": "v", "color": "tab:orange", "label": "early-stopped (ASHA)"},
}
OTHER = {"marker": "s", "color": "tab:gray", "label": "running / other"}


def save(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG at `path` (tight bounding box); returns `path`."""
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path
