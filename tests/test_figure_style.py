"""The figures' shared look (fmvae.report.plotting): the house style file is applied, density heat
maps carry a labelled colour bar, legends sit outside the axes and inside the saved (tight) box, and
points on few distinct positions are drawn one marker per (position, cohort), area ∝ count, with the
cohorts dodged; continuous points stay a plain scatter."""

import ast
import subprocess
import sys
from importlib import resources
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.legend import Legend

from fmvae import config as cfg
from fmvae.report import data_figures as df
from fmvae.report import model_figures as mf
from fmvae.report import plotting

FIGURE_MODULES = ("data_figures", "model_figures", "semi_figures", "adversarial_figure")
REPORT = Path(plotting.__file__).parent


def style_params() -> dict:
    with resources.as_file(resources.files("fmvae.report") / plotting.STYLE_FILE) as path:
        return dict(matplotlib.rc_params_from_file(path, use_default_template=False))


def test_the_style_file_is_applied():
    params = style_params()
    assert len(params) >= 30
    for key, value in params.items():
        assert matplotlib.rcParams[key] == value, key
    assert matplotlib.rcParams["legend.fontsize"] == 7
    assert matplotlib.rcParams["axes.prop_cycle"].by_key()["color"][0].lower() == "#0173b2"
    assert matplotlib.rcParams["savefig.bbox"] == "tight"
    assert matplotlib.rcParams["image.interpolation"] == "nearest"


def test_every_figure_module_imports_plotting_first():
    """Each figure module imports the style's module (directly, or through a figure module that
    does) before anything of its own is drawn; and a fresh interpreter that imports only one of them
    has the house style."""
    for name in FIGURE_MODULES:
        tree = ast.parse((REPORT / f"{name}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert imported & {"fmvae.report.plotting", "fmvae.report.data_figures", "fmvae.report.model_figures"}, name
    code = ("import matplotlib; import fmvae.report.adversarial_figure; "
            "print(matplotlib.rcParams['legend.fontsize'], matplotlib.rcParams['savefig.pad_inches'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [float(v) for v in out] == [7.0, 0.05]


@pytest.fixture
def captured(monkeypatch):
    """The figures a module function would save: kept open for inspection instead."""
    figures = []
    monkeypatch.setattr(df, "save_figure", lambda fig, outputs, dpi: figures.append(fig))
    yield figures
    for fig in figures:
        plotting.plt.close(fig)


def colorbar_labels(fig) -> list[str]:
    """The label of the colour bar of every density heat map (QuadMesh) of ``fig``; None if it has none."""
    meshes = [c for ax in fig.axes for c in ax.collections if isinstance(c, QuadMesh)]
    bars = {mesh.colorbar.ax for mesh in meshes if mesh.colorbar is not None}  # a bar draws a QuadMesh too
    return [None if mesh.colorbar is None else mesh.colorbar.ax.get_ylabel() or mesh.colorbar.ax.get_xlabel()
            for mesh in meshes if mesh.axes not in bars]


def inside(outer, inner, tol: float = 1.0) -> bool:
    return (inner.x0 >= outer.x0 - tol and inner.y0 >= outer.y0 - tol and inner.x1 <= outer.x1 + tol
            and inner.y1 <= outer.y1 + tol)


def saved_box(fig):
    """The figure's tight bounding box in display pixels: what save_figure keeps."""
    renderer = fig.canvas.get_renderer()
    return fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans), renderer


def test_joint_density_maps_have_labelled_colour_bars_and_legends_outside(captured):
    style = cfg.load_config([Path(__file__).parents[1] / "config" / "config.yaml"])["figures"]
    style = {**style, "grid_points": 40}
    df.figure2(["unused.png"], style)
    df.figure3(["unused.png"], style)
    fig2, fig3 = captured
    for fig, n_maps in ((fig2, 3), (fig3, 1)):
        labels = colorbar_labels(fig)
        assert len(labels) == n_maps
        assert all(label and "p(x, z)" in label and "density per unit" in label for label in labels)
    # Figure 3's legend is right of the posterior panel, off the curves, and kept in the saved box.
    box, renderer = saved_box(fig3)
    ax = fig3.axes[1]
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.x0 >= ax.get_window_extent(renderer).x1
    assert inside(box, legend)
    # Figure 2's legends are in the empty bottom-right panel; the data panels have none.
    key = fig2.axes[7]
    assert not key.axison and key.get_legend() is not None
    assert [a.get_legend() for a in fig2.axes[:7] if a.get_legend() is not None] == []


def test_a_density_map_has_a_colour_bar_with_its_quantity_and_unit():
    fig, ax = plotting.plt.subplots()
    gx, gy = np.meshgrid(np.linspace(-1, 1, 20), np.linspace(-1, 1, 20))
    density = np.exp(-(gx ** 2 + gy ** 2))
    mf._density_map(ax, gx, gy, density, density.max(), what="learned $p_θ(x)$")
    assert len(fig.axes) == 2
    (label,) = colorbar_labels(fig)
    assert label.startswith("learned $p_θ(x)$") and plotting.DENSITY_PER_X_AREA in label
    bar = fig.axes[1]
    assert bar.get_position().y1 < ax.get_position().y0  # horizontal, below the map
    plotting.plt.close(fig)


def discrete_points(n: int = 734, positions: int = 15, seed: int = 0):
    """``n`` points on ``positions`` distinct places (as a PCA of discrete data gives: equal up to
    floating-point noise), in two cohorts."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(positions, 2)) * 3
    where = rng.integers(0, positions, n)
    points = centres[where] + rng.normal(scale=1e-13, size=(n, 2))
    return points, rng.integers(0, 2, n), where


def test_count_markers_on_few_distinct_positions():
    points, groups, where = discrete_points()
    assert plotting.is_discrete(points)
    markers = plotting.count_markers(points, groups)
    assert markers.aggregated
    expected = {}
    for w, g in zip(where, groups):
        expected[w, g] = expected.get((w, g), 0) + 1
    assert len(markers.counts) == len(expected) <= 30  # one marker per (position, cohort)
    assert markers.counts.sum() == len(points)
    for point, group, count in zip(markers.points, markers.groups, markers.counts):
        w = int(np.argmin(np.abs(points - point).sum(1)))
        assert expected[where[w], group] == count
    np.testing.assert_allclose(markers.sizes / markers.counts, markers.area_per_count)  # area ∝ count
    assert markers.sizes.max() == pytest.approx(plotting.MAX_MARKER_AREA)


def test_count_markers_leave_continuous_points_as_they_are():
    rng = np.random.default_rng(1)
    points, groups = rng.normal(size=(500, 2)), rng.integers(0, 3, 500)
    assert not plotting.is_discrete(points)
    markers = plotting.count_markers(points, groups)
    assert not markers.aggregated
    np.testing.assert_array_equal(markers.points, points)
    np.testing.assert_array_equal(markers.groups, groups)
    assert (markers.counts == 1).all() and (markers.sizes == plotting.CONTINUOUS_MARKER_AREA).all()
    # The threshold: distinct positions 20% of the points is continuous, fewer (here 1/6) discrete.
    assert not plotting.is_discrete(np.repeat(points[:100], 5, axis=0))
    assert plotting.is_discrete(np.repeat(points[:100], 6, axis=0))


def test_scatter_by_count_dodges_cohorts_and_keeps_both_legends_in_the_saved_box():
    points, groups, _ = discrete_points()
    fig, ax = plotting.plt.subplots()
    # long cohort labels: the cohort legend is wider than the count legend below it
    markers = plotting.scatter_by_count(ax, points, groups, {0: "cohort1 (label -1, n=501), a long label",
                                                             1: "cohort2 (label 1, n=233)"})
    drawn = ax.collections
    assert len(drawn) == 2
    shifts = []
    for collection, group in zip(drawn, (0, 1)):
        np.testing.assert_allclose(collection.get_sizes(), markers.sizes[markers.groups == group])
        origin = collection.get_offset_transform().transform([0.0, 0.0])
        shifts.append(origin - ax.transData.transform([0.0, 0.0]))
    gap = (shifts[1] - shifts[0]) / fig.dpi * 72  # in points
    assert gap[0] == pytest.approx(0.5 * np.sqrt(plotting.MAX_MARKER_AREA)) and gap[1] == pytest.approx(0)
    box, renderer = saved_box(fig)
    frame = ax.get_window_extent(renderer)
    legends = [a for a in ax.get_children() if isinstance(a, Legend)]
    assert len(legends) == 2
    assert any("count" in legend.get_title().get_text() for legend in legends)
    for legend in legends:
        extent = legend.get_window_extent(renderer)
        assert extent.x0 >= frame.x1 and inside(box, extent)
    plotting.plt.close(fig)

    fig, ax = plotting.plt.subplots()
    rng = np.random.default_rng(2)
    continuous = plotting.scatter_by_count(ax, rng.normal(size=(300, 2)), rng.integers(0, 2, 300), {0: "a", 1: "b"})
    assert not continuous.aggregated
    assert [len(c.get_offsets()) for c in ax.collections] == [np.sum(continuous.groups == g) for g in (0, 1)]
    plotting.plt.close(fig)
