"""Shared plotting helpers: a headless backend, the house style (``fmvae.mplstyle``, applied on
import: every figure module imports this one before it draws), atomic figure saving, and what the
figures share: density colour bars that name their quantity and unit, legends placed outside the
data, and markers sized by count for points that fall on few distinct positions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import ScaledTranslation, offset_copy

from fmvae.store import atomic_path

STYLE_FILE = "fmvae.mplstyle"
# Units of the density colour bars: p(x) over the two drawn coordinates, the joint p(x, z) of 1-D x, z.
DENSITY_PER_X_AREA = "density per unit area of $(x_1, x_2)$"
DENSITY_PER_XZ = "density per unit x·z"
# Points are drawn sized by count when their distinct positions are fewer than this fraction of them.
DISCRETE_FRACTION = 0.2
MAX_MARKER_AREA = 400.0  # pt², the marker of the largest count
CONTINUOUS_MARKER_AREA = 6.0  # pt², one point of a plain scatter


def apply_style() -> None:
    """Apply the house style (the package file ``fmvae.mplstyle``) to matplotlib's rcParams."""
    with resources.as_file(resources.files(__package__) / STYLE_FILE) as path:
        plt.style.use(path)


apply_style()


def save_figure(fig, outputs, dpi: int) -> None:
    """Write ``fig`` to every path in ``outputs`` (format from the suffix), each atomically."""
    for out in outputs:
        suffix = os.path.splitext(str(out))[1]
        with atomic_path(out, suffix=f".tmp{suffix}") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=suffix.lstrip("."),
                        metadata={"Software": None} if suffix == ".png" else {"Creator": None, "Producer": None,
                                                                              "CreationDate": None})
    plt.close(fig)


def density_colorbar(fig, mappable, ax, label: str, location: str = "bottom"):
    """A colour bar for a density heat map, labelled with what it shows and its unit. Horizontal below
    the axes by default (the right side stays free for a colour bar of z); ``location="right"``
    where nothing else is there. Ticks are the density's values (on a power-law scale they are not
    evenly spaced)."""
    horizontal = location in ("bottom", "top")
    bar = fig.colorbar(mappable, ax=ax, location=location, label=label, fraction=0.05 if horizontal else 0.046,
                       pad=0.16 if horizontal else 0.03, aspect=30 if horizontal else 20)
    bar.ax.tick_params(labelsize=plt.rcParams["xtick.labelsize"])
    bar.locator = MaxNLocator(5)
    bar.update_ticks()
    return bar


def legend_right(ax, handles=None, labels=None, **kwargs):
    """A legend outside the axes, to the right, top-aligned (tight_layout and the tight bounding box of
    :func:`save_figure` make room for it)."""
    return ax.legend(**_entries(handles, labels), **{"loc": "upper left", "bbox_to_anchor": (1.02, 1.0),
                                                      "borderaxespad": 0.0, **kwargs})


def legend_below(ax, handles=None, labels=None, offset_pt: float = 30.0, **kwargs):
    """A legend outside the axes, centred below them, ``offset_pt`` points under the frame (clear of
    the tick labels and the x label)."""
    anchor = offset_copy(ax.transAxes, fig=ax.figure, y=-offset_pt, units="points")
    kwargs = {"loc": "upper center", "bbox_to_anchor": (0.5, 0.0), "bbox_transform": anchor, "borderaxespad": 0.0,
              "ncol": max(1, len(handles if handles is not None else ax.get_legend_handles_labels()[0])), **kwargs}
    return ax.legend(**_entries(handles, labels), **kwargs)


def _entries(handles, labels) -> dict:
    """Legend entries as keywords: none (the axes' labelled artists), handles, or handles and labels."""
    return {k: v for k, v in (("handles", handles), ("labels", labels)) if v is not None}


@dataclass
class CountMarkers:
    """Points to draw: one row per marker, its position, group (cohort) and count, and the marker
    area in pt². ``aggregated``: False when the points were left as they are (continuous data)."""

    points: np.ndarray  # (M, 2)
    groups: np.ndarray  # (M,)
    counts: np.ndarray  # (M,)
    sizes: np.ndarray  # (M,)
    aggregated: bool

    @property
    def area_per_count(self) -> float:
        return float(self.sizes[0] / self.counts[0]) if len(self.counts) else 0.0


def is_discrete(points, max_fraction: float = DISCRETE_FRACTION) -> bool:
    """True when the distinct rows of ``points`` are fewer than ``max_fraction`` of them (equal up to
    rounding at 1e-9 of the data's range)."""
    points = np.asarray(points, dtype=np.float64)
    return len(points) > 0 and len(_distinct(points)[0]) < max_fraction * len(points)


def _distinct(points: np.ndarray):
    """The distinct rows of ``points`` (rounded at 1e-9 of the range) and each row's index among them."""
    scale = np.ptp(points, axis=0)
    scale = np.where(scale > 0, scale, 1.0) * 1e-9
    keys, index = np.unique(np.round(points / scale), axis=0, return_inverse=True)
    return keys, index.ravel()


def count_markers(points, groups=None, max_fraction: float = DISCRETE_FRACTION,
                  max_area: float = MAX_MARKER_AREA, base_area: float = CONTINUOUS_MARKER_AREA) -> CountMarkers:
    """Markers for a scatter of ``points`` (N, 2) in ``groups`` (N,; None: one group). When the points
    have few distinct positions (:func:`is_discrete`), one marker per distinct (position, group) with
    area ∝ count (the largest count gets ``max_area``), groups in order and positions in sorted
    order within a group; otherwise the points as they are, each ``base_area``."""
    points = np.asarray(points, dtype=np.float64)
    groups = np.zeros(len(points), dtype=int) if groups is None else np.asarray(groups)
    if not is_discrete(points, max_fraction):
        return CountMarkers(points, groups, np.ones(len(points), dtype=int), np.full(len(points), base_area), False)
    _, position = _distinct(points)
    rows, counts_all = [], []
    for group in np.unique(groups):
        sel = np.flatnonzero(groups == group)
        _, first, counts = np.unique(position[sel], return_index=True, return_counts=True)
        rows.append(sel[first])
        counts_all.append(counts)
    rows, counts = np.concatenate(rows), np.concatenate(counts_all)
    return CountMarkers(points[rows], groups[rows], counts, counts * (max_area / counts.max()), True)


def dodge_offsets(n_groups: int, max_area: float = MAX_MARKER_AREA) -> np.ndarray:
    """Horizontal offsets in points, one per group, centred on zero: neighbouring groups lie half the
    largest marker's diameter apart, so coinciding markers of different groups both stay visible."""
    step = 0.5 * np.sqrt(max_area)
    return (np.arange(n_groups) - (n_groups - 1) / 2) * step


def scatter_by_count(ax, points, groups, labels, colors=None, max_fraction: float = DISCRETE_FRACTION,
                     max_area: float = MAX_MARKER_AREA, base_area: float = CONTINUOUS_MARKER_AREA) -> CountMarkers:
    """Scatter ``points`` coloured by group (``labels``: group value -> legend label). Points on few
    distinct positions are drawn by :func:`count_markers`, each group dodged sideways by
    :func:`dodge_offsets` (in points, so at any zoom) and translucent, with a legend of marker sizes
    (counts) beside the group legend, both right of the axes; continuous points as a plain scatter."""
    markers = count_markers(points, groups, max_fraction, max_area, base_area)
    values = list(labels)
    colors = colors or [f"C{i}" for i in range(len(values))]
    if not markers.aggregated:
        for value, color in zip(values, colors):
            sel = markers.groups == value
            ax.scatter(*markers.points[sel].T, s=base_area, color=color, alpha=0.6, linewidths=0, label=labels[value])
        legend_right(ax, markerscale=2)
        return markers
    for value, color, dx in zip(values, colors, dodge_offsets(len(values), max_area)):
        sel = markers.groups == value
        transform = ax.transData + ScaledTranslation(dx / 72, 0, ax.figure.dpi_scale_trans)
        ax.scatter(*markers.points[sel].T, s=markers.sizes[sel], color=color, alpha=0.55, edgecolors=color,
                   linewidths=0.8, transform=transform, label=labels[value], zorder=3)
    # Offsets outside data coordinates are left out of autoscaling: the limits are set here.
    lo, hi = markers.points.min(axis=0), markers.points.max(axis=0)
    pad = 0.1 * np.where(hi > lo, hi - lo, 1.0)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    group_legend = legend_right(ax, title="cohort")
    for handle in group_legend.legend_handles:
        handle.set_sizes([40.0])
    ax.add_artist(group_legend)
    group_legend.set_clip_on(False)  # an added artist is clipped to the axes: unclipped, the tight bbox keeps it
    largest = int(markers.counts.max())
    ticks = MaxNLocator(3, integer=True).tick_values(1, largest)
    counts = sorted({1, *(int(c) for c in ticks if 1 < c <= largest)})
    handles = [Line2D([], [], ls="", marker="o", markersize=np.sqrt(c * markers.area_per_count), color="0.5",
                      alpha=0.55, markeredgecolor="0.3", label=str(c)) for c in counts]
    legend_right(ax, handles, title="points at one position\n(marker area ∝ count)", loc="lower left",
                 bbox_to_anchor=(1.02, 0.0), labelspacing=1.3, borderpad=0.8)
    return markers
