"""Ground-truth generative models of the paper: one small function per equation, in a registry.

Each function maps latents ``z`` (N×K) and, for the semi-supervised sets, labels ``y`` (N,) to the
noise-free mean f(z) (N×D). Equation numbers and appendix sections refer to the paper; the cleaned
reading is ``docs/methods.md`` §1. Where the paper is ambiguous the choice is a keyword
argument whose default is the documented choice, set from the config (``data.synthetic.datasets``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr as Phi  # standard normal CDF

# Sec. 8 / Table 1: the 2-D Figure-8 and Clusters curves embedded in 5-D by x = Aᵀ f(z) + ε.
EMBEDDING_5D = np.array([[1.0, 0.0, 0.5, 0.2, -0.8], [0.0, 1.0, -0.5, 0.3, -0.1]])

# Eq. 6: the ground-truth A and the fixed B of the Cholesky-restricted linear model.
LINEAR_A_GT = np.array([[0.75, 0.25], [1.5, -1.0]])


def _z1(z: np.ndarray) -> np.ndarray:
    return np.asarray(z, dtype=np.float64)[:, 0]


def figure8(z, y=None):
    """G.1 (eq. 33): u = (0.6 + 1.8 Φ(z))π on a lemniscate."""
    u = (0.6 + 1.8 * Phi(_z1(z))) * np.pi
    denom = 1.0 + np.sin(u) ** 2
    return np.stack([np.sqrt(2) / 2 * np.cos(u) / denom, np.sqrt(2) * np.cos(u) * np.sin(u) / denom], axis=1)


def circle(z, y=None):
    """G.2 (eq. 34): (cos 2πΦ(z), sin 2πΦ(z))."""
    angle = 2 * np.pi * Phi(_z1(z))
    return np.stack([np.cos(angle), np.sin(angle)], axis=1)


def absolute_value(z, y=None, form: str = "abs_z"):
    """G.3 (eq. 35). ``form='abs_z'``: f(z) = (|z|, |z|), as Section 6 states (the choice: the
    extracted eq. 35 reads |Φ(z)|, which is one-to-one and contradicts the bimodal posteriors the
    paper describes). ``form='abs_phi'``: the literal (|Φ(z)|, |Φ(z)|)."""
    z1 = _z1(z)
    if form == "abs_z":
        v = np.abs(z1)
    elif form == "abs_phi":
        v = np.abs(Phi(z1))
    else:
        raise ValueError(f"absolute_value: form must be 'abs_z' or 'abs_phi', got {form!r}")
    return np.stack([v, v], axis=1)


def _steps(u: np.ndarray, height: float) -> np.ndarray:
    """The smoothed staircase of G.4/G.5: height·tanh(10u − 20⌊u/2⌋ − 10) + 2·height⌊u/2⌋ + height."""
    k = np.floor(u / 2)
    return height * np.tanh(10 * u - 20 * k - 10) + 2 * height * k + height


def clusters_angle(z) -> np.ndarray:
    """G.4's t(u(z)) with u = 2π/(1 + e^{−πz/2}): plateaus at t ≈ 0, 4, 8, 12."""
    return _steps(2 * np.pi / (1 + np.exp(-0.5 * np.pi * _z1(z))), 2.0)


def clusters(z, y=None):
    """G.4 (eq. 36): a smoothed step function embedded on the circle, (cos t, sin t)."""
    t = clusters_angle(z)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def spiral_angle(z) -> np.ndarray:
    """G.5's t(u(z)) with u = 4π/(1 + e^{−πz/2}): plateaus at t ≈ 0, 2, ..., 12."""
    return _steps(4 * np.pi / (1 + np.exp(-0.5 * np.pi * _z1(z))), 1.0)


def spiral_dots(z, y=None):
    """G.5 (eq. 37): a smoothed step function embedded on a spiral, (t cos t, t sin t)."""
    t = spiral_angle(z)
    return np.stack([t * np.cos(t), t * np.sin(t)], axis=1)


def discrete_semicircle(z, y):
    """H.1 (eq. 38): φ = π√Φ(z) for y = 0 and πΦ(z)³ for y = 1, on the upper semi-circle."""
    p = Phi(_z1(z))
    y = np.asarray(y)
    angle = np.where(y == 0, np.pi * np.sqrt(p), np.pi * p**3)
    return np.stack([np.cos(angle), np.sin(angle)], axis=1)


def continuous_semicircle(z, y):
    """H.2 (eq. 39): h = F⁻¹_Beta(0.2,0.2)(Φ(y)) blends the two semi-circle parameterisations."""
    from scipy.stats import beta as beta_distribution  # here, not at the top: scipy.stats costs ~0.4 s to import in every job

    p = Phi(_z1(z))
    h = beta_distribution.ppf(Phi(np.asarray(y, dtype=np.float64)), 0.2, 0.2)
    angle = np.pi * (h * np.sqrt(p) + (1 - h) * p**3)
    return np.stack([np.cos(angle), np.sin(angle)], axis=1)


def figure8_5d(z, y=None):
    """Sec. 8: Figure-8 embedded in 5-D, Aᵀ f(z)."""
    return figure8(z) @ EMBEDDING_5D


def clusters_5d(z, y=None):
    """Sec. 8: Clusters embedded in 5-D, Aᵀ f(z)."""
    return clusters(z) @ EMBEDDING_5D


def linear_cholesky_matrix(A=LINEAR_A_GT, B: float = 0.006) -> np.ndarray:
    """Eq. 6: L = Cholesky(AAᵀ + B·I) (lower triangular)."""
    A = np.asarray(A, dtype=np.float64)
    return np.linalg.cholesky(A @ A.T + B * np.eye(A.shape[0]))


def linear_cholesky(z, y=None, B: float = 0.006):
    """Eq. 6: f(z) = Cholesky(A_GT A_GTᵀ + B) z with z ~ N(0, I₂)."""
    return np.asarray(z, dtype=np.float64) @ linear_cholesky_matrix(LINEAR_A_GT, B).T


def figure2_variant1(z, y=None):
    """Figure 2, variant 1: (z − 0.5)², z ~ U(0, 1)."""
    return ((_z1(z) - 0.5) ** 2)[:, None]


def figure2_variant2(z, y=None):
    """Figure 2, variant 2: 0.25 z², z ~ U(0, 1)."""
    return (0.25 * _z1(z) ** 2)[:, None]


def figure2_variant3(z, y=None):
    """Figure 2, variant 3: 1[z<0.5](2z − 0.5)² + 1[z≥0.5](2z − 1.5)², z ~ U(0, 1)."""
    z1 = _z1(z)
    return np.where(z1 < 0.5, (2 * z1 - 0.5) ** 2, (2 * z1 - 1.5) ** 2)[:, None]


def floor_steps(z, y=None):
    """Eq. 7: f(z) = ⌊z⌋."""
    return np.floor(_z1(z))[:, None]


@dataclass(frozen=True)
class GroundTruth:
    """One ground-truth model: prior, label distribution, f and the paper's noise variance."""

    name: str
    f: Callable
    latent_dim: int
    data_dim: int
    sigma2: float  # the paper's σ² (the config may override it where docs/methods.md marks a choice)
    prior: str = "normal"  # "normal": z ~ N(0, I); "uniform": z ~ U(0, 1)
    label: str | None = None  # None, "bernoulli" (y ~ Bern(½)) or "normal" (y ~ N(0, 1))
    surrogate: bool = True  # fit a 3×50 network to f and simulate from it (Appendix G/H)
    simulate: bool = True  # a benchmark data set (False: used for figures only)
    reference: str = ""
    params: dict = field(default_factory=dict)  # keyword arguments of f taken from the config
    # Variance of the noise actually added to f(z), given σ² and the parameters; eq. 6 adds σ² − B.
    noise_variance: Callable[[float, dict], float] = lambda sigma2, params: sigma2

    @property
    def n_classes(self) -> int:
        return 2 if self.label == "bernoulli" else 0

    def sample_latents(self, rng: np.random.Generator, n: int):
        """Draw (z, y) from the prior; y is None for unsupervised sets."""
        if self.prior == "normal":
            z = rng.standard_normal((n, self.latent_dim))
        else:
            z = rng.uniform(0.0, 1.0, (n, self.latent_dim))
        if self.label == "bernoulli":
            y = rng.integers(0, 2, n)
        elif self.label == "normal":
            y = rng.standard_normal(n)
        else:
            y = None
        return z, y

    def mean(self, z, y=None, **params) -> np.ndarray:
        """f(z, y) with this data set's keyword parameters (``params`` overrides)."""
        kwargs = {**self.params, **params}
        return self.f(z, y, **kwargs) if self.label else self.f(z, **kwargs)

    def decoder_input(self, z, y=None) -> np.ndarray:
        """The decoder's input: z, then one-hot y (discrete) or y (continuous)."""
        z = np.asarray(z, dtype=np.float64)
        if self.label == "bernoulli":
            return np.concatenate([z, np.eye(self.n_classes)[np.asarray(y, dtype=int)]], axis=1)
        if self.label == "normal":
            return np.concatenate([z, np.asarray(y, dtype=np.float64)[:, None]], axis=1)
        return z

    @property
    def decoder_input_dim(self) -> int:
        return self.latent_dim + (self.n_classes if self.label == "bernoulli" else 1 if self.label else 0)

    @property
    def input_layout(self) -> str:
        return {None: "z", "bernoulli": f"z,onehot(y,{self.n_classes})", "normal": "z,y"}[self.label]


def _entries() -> list[GroundTruth]:
    return [
        GroundTruth("figure8", figure8, 1, 2, 0.02, reference="Appendix G.1, eq. 33"),
        GroundTruth("circle", circle, 1, 2, 0.01, reference="Appendix G.2, eq. 34"),
        GroundTruth("absolute_value", absolute_value, 1, 2, 0.01, reference="Appendix G.3, eq. 35",
                    params={"form": "abs_z"}),
        GroundTruth("clusters", clusters, 1, 2, 0.2, reference="Appendix G.4, eq. 36"),
        GroundTruth("spiral_dots", spiral_dots, 1, 2, 0.01, reference="Appendix G.5, eq. 37"),
        GroundTruth("discrete_semicircle", discrete_semicircle, 1, 2, 0.01, label="bernoulli",
                    reference="Appendix H.1, eq. 38"),
        GroundTruth("continuous_semicircle", continuous_semicircle, 1, 2, 0.01, label="normal",
                    reference="Appendix H.2, eq. 39 (σ² not stated: a choice)"),
        GroundTruth("figure8_5d", figure8_5d, 1, 5, 0.02, reference="Section 8, Table 1"),
        GroundTruth("clusters_5d", clusters_5d, 1, 5, 0.2, reference="Section 8, Table 1"),
        GroundTruth("linear_cholesky", linear_cholesky, 2, 2, 0.01, surrogate=False,
                    reference="Section 5.2, eq. 6", params={"B": 0.006},
                    noise_variance=lambda sigma2, params: sigma2 - params["B"]),
        GroundTruth("figure2_variant1", figure2_variant1, 1, 1, 0.01, prior="uniform", surrogate=False,
                    simulate=False, reference="Figure 2"),
        GroundTruth("figure2_variant2", figure2_variant2, 1, 1, 0.01, prior="uniform", surrogate=False,
                    simulate=False, reference="Figure 2"),
        GroundTruth("figure2_variant3", figure2_variant3, 1, 1, 0.01, prior="uniform", surrogate=False,
                    simulate=False, reference="Figure 2"),
        GroundTruth("floor_steps", floor_steps, 1, 1, 0.1, surrogate=False, simulate=False,
                    reference="Section 5.3, eq. 7 (σ² not stated: a choice)"),
    ]


REGISTRY: dict[str, GroundTruth] = {g.name: g for g in _entries()}
SIMULATED = [name for name, g in REGISTRY.items() if g.simulate]


def get(name: str) -> GroundTruth:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown ground-truth model {name!r}; known: {sorted(REGISTRY)}") from None
