"""Ground-truth functions against hand-computed values and the properties in docs/methods.md §1."""

import numpy as np
import pytest
from scipy.special import ndtr

from fmvae.data import groundtruth as G
from fmvae.metrics import linear_gaussian


def z_col(*values):
    return np.array(values, dtype=float)[:, None]


def test_figure8_crosses_itself_at_z0_and_closes_in_the_tails():
    # z = 0: u = 1.5π, cos u = 0, so f = (0, 0): the crossing point.
    np.testing.assert_allclose(G.figure8(z_col(0.0)), [[0.0, 0.0]], atol=1e-12)
    # Tails: u → 0.6π and 2.4π, both give the same point (cos 2.4π = cos 0.4π... mirrored).
    u = 0.6 * np.pi
    expected = [np.sqrt(2) / 2 * np.cos(u) / (1 + np.sin(u) ** 2), np.sqrt(2) * np.cos(u) * np.sin(u) / (1 + np.sin(u) ** 2)]
    np.testing.assert_allclose(G.figure8(z_col(-40.0))[0], expected, atol=1e-9)
    # Far-apart z map to nearby x: z = 0 and both tails all lie within 0.25 of the crossing.
    assert np.linalg.norm(G.figure8(z_col(-3.0))[0]) < 0.3 and np.linalg.norm(G.figure8(z_col(3.0))[0]) < 0.3


def test_circle_hand_values():
    np.testing.assert_allclose(G.circle(z_col(0.0)), [[-1.0, 0.0]], atol=1e-12)
    angle = 2 * np.pi * ndtr(1.0)
    np.testing.assert_allclose(G.circle(z_col(1.0)), [[np.cos(angle), np.sin(angle)]], atol=1e-12)


def test_absolute_value_choice_and_literal_form():
    np.testing.assert_allclose(G.absolute_value(z_col(-1.5, 2.0)), [[1.5, 1.5], [2.0, 2.0]])
    np.testing.assert_allclose(G.absolute_value(z_col(0.0), form="abs_phi"), [[0.5, 0.5]])
    # |z| is two-to-one (bimodal posteriors), |Φ(z)| is one-to-one.
    np.testing.assert_allclose(G.absolute_value(z_col(-1.0)), G.absolute_value(z_col(1.0)))
    with pytest.raises(ValueError, match="abs_z"):
        G.absolute_value(z_col(0.0), form="nope")


def _plateau_fraction(t, levels, tol):
    return np.mean(np.min(np.abs(t[:, None] - np.asarray(levels)[None, :]), axis=1) < tol)


def test_clusters_has_four_plateaus():
    z = np.random.default_rng(0).standard_normal((50000, 1))
    t = G.clusters_angle(z)
    assert _plateau_fraction(t, [0, 4, 8, 12], 0.5) > 0.9
    # every plateau is populated
    for level in [4, 8]:
        assert np.mean(np.abs(t - level) < 0.5) > 0.1
    # hand value: z = 0 gives u = π, ⌊u/2⌋ = 1, t = 2·tanh(10π − 30) + 6
    np.testing.assert_allclose(G.clusters_angle(z_col(0.0)), [2 * np.tanh(10 * np.pi - 30) + 6])
    np.testing.assert_allclose(np.linalg.norm(G.clusters(z), axis=1), 1.0)


def test_spiral_dots_plateaus_at_even_numbers():
    z = np.random.default_rng(1).standard_normal((50000, 1))
    t = G.spiral_angle(z)
    assert _plateau_fraction(t, np.arange(0, 13, 2), 0.3) > 0.9
    assert t.min() >= 0 and t.max() < 12.01
    np.testing.assert_allclose(np.linalg.norm(G.spiral_dots(z), axis=1), np.abs(t))


def test_discrete_semicircle_hand_values():
    f = G.discrete_semicircle(z_col(0.0, 0.0), np.array([0, 1]))
    np.testing.assert_allclose(f[0], [np.cos(np.pi * np.sqrt(0.5)), np.sin(np.pi * np.sqrt(0.5))])
    np.testing.assert_allclose(f[1], [np.cos(np.pi / 8), np.sin(np.pi / 8)])


def test_continuous_semicircle_interpolates_the_discrete_one():
    z = np.random.default_rng(2).standard_normal((100, 1))
    # h(y) → 1 as y → ∞ (the y = 0 curve) and → 0 as y → −∞ (the y = 1 curve).
    np.testing.assert_allclose(G.continuous_semicircle(z, np.full(100, 8.0)), G.discrete_semicircle(z, np.zeros(100)), atol=1e-6)
    np.testing.assert_allclose(G.continuous_semicircle(z, np.full(100, -8.0)), G.discrete_semicircle(z, np.ones(100)), atol=1e-6)
    # y = 0: h = 0.5 by the symmetry of Beta(0.2, 0.2)
    p = ndtr(0.3)
    expected_angle = np.pi * (0.5 * np.sqrt(p) + 0.5 * p**3)
    np.testing.assert_allclose(G.continuous_semicircle(z_col(0.3), np.zeros(1))[0], [np.cos(expected_angle), np.sin(expected_angle)])


def test_5d_embeddings_keep_the_2d_curve_in_the_first_two_coordinates():
    z = np.random.default_rng(3).standard_normal((50, 1))
    for name_5d, name_2d in [("figure8_5d", "figure8"), ("clusters_5d", "clusters")]:
        f5, f2 = G.get(name_5d).mean(z), G.get(name_2d).mean(z)
        assert f5.shape == (50, 5)
        np.testing.assert_allclose(f5[:, :2], f2)
        np.testing.assert_allclose(f5[:, 2], 0.5 * f2[:, 0] - 0.5 * f2[:, 1])


def test_figure2_variants_share_one_marginal():
    # Under z ~ U(0,1), P(f(z) <= t) = 2 sqrt(t) on [0, 1/4] for all three variants.
    z = ((np.arange(400000) + 0.5) / 400000)[:, None]
    for name in ["figure2_variant1", "figure2_variant2", "figure2_variant3"]:
        f = G.get(name).mean(z)[:, 0]
        for t in [0.01, 0.05, 0.1, 0.2, 0.25]:
            assert abs(np.mean(f <= t) - 2 * np.sqrt(t)) < 1e-4, (name, t)


def test_floor_steps():
    np.testing.assert_array_equal(G.floor_steps(z_col(-1.5, -0.2, 0.0, 0.99, 2.3))[:, 0], [-2, -1, 0, 0, 2])


def test_linear_cholesky_is_lower_triangular_and_matches_the_covariance():
    L = G.linear_cholesky_matrix()
    assert L[0, 1] == 0
    np.testing.assert_allclose(L @ L.T, G.LINEAR_A_GT @ G.LINEAR_A_GT.T + 0.006 * np.eye(2))
    np.testing.assert_allclose(G.linear_cholesky(np.array([[1.0, 0.0]])), [L[:, 0]])
    assert G.get("linear_cholesky").noise_variance(0.01, {"B": 0.006}) == pytest.approx(0.004)


def test_eq6_closed_form_neg_elbo_at_ground_truth_and_optimum():
    mleo, pmo = linear_gaussian.objective_terms(G.LINEAR_A_GT)
    assert mleo == pytest.approx(0.0, abs=1e-12)
    assert round(pmo, 3) == 0.532
    best, A = linear_gaussian.global_optimum()
    assert round(best, 3) == 0.196
    # the optimum trades density error (MLEO > 0) for simpler posteriors
    mleo_opt, pmo_opt = linear_gaussian.objective_terms(A)
    assert mleo_opt > 0.1 and pmo_opt < pmo


def test_registry_shapes_and_decoder_inputs():
    rng = np.random.default_rng(4)
    for name, gt in G.REGISTRY.items():
        z, y = gt.sample_latents(rng, 7)
        assert z.shape == (7, gt.latent_dim)
        assert gt.mean(z, y).shape == (7, gt.data_dim), name
        assert gt.decoder_input(z, y).shape == (7, gt.decoder_input_dim), name
    with pytest.raises(KeyError, match="known"):
        G.get("nope")
