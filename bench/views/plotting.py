"""matplotlib set up once for files (no display), and the one way a figure is saved and closed."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save(fig: plt.Figure, path: Path, dpi: int = 90) -> Path:
    """Lay the figure out, write it as PNG and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
