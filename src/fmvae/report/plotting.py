"""Shared plotting helpers: a headless backend, the house style and atomic figure saving."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns

from fmvae.store import atomic_path

sns.set_theme(style="white", context="paper")


def save_figure(fig, outputs, dpi: int) -> None:
    """Write ``fig`` to every path in ``outputs`` (format from the suffix), each atomically."""
    for out in outputs:
        suffix = os.path.splitext(str(out))[1]
        with atomic_path(out, suffix=f".tmp{suffix}") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=suffix.lstrip("."),
                        metadata={"Software": None} if suffix == ".png" else {"Creator": None, "Producer": None,
                                                                              "CreationDate": None})
    plt.close(fig)
