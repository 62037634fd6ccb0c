"""Closed forms for the Cholesky-restricted linear model of eq. 6 (Section 5.2).

With L = chol(AAᵀ + B·I) and Ψ = (σ² − B)·I the model is p(x) = N(0, LLᵀ + Ψ). Its negative
ELBO, with the best mean-field Gaussian q, splits (up to a constant) into
MLEO = KL(p_true(x) ‖ p_θ(x)) and PMO = ½[Σ_k log Λ_kk − log det Λ] with Λ = I + LᵀΨ⁻¹L (the
posterior precision). At the ground truth the MLEO is 0 and the PMO 0.532; the global optimum of
the ELBO trades the two for 0.196 (paper, Sec. 5.2).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from fmvae.data.groundtruth import LINEAR_A_GT, linear_cholesky_matrix


def _gaussian_kl(cov_p: np.ndarray, cov_q: np.ndarray) -> float:
    """KL(N(0, cov_p) ‖ N(0, cov_q))."""
    d = cov_p.shape[0]
    return 0.5 * (np.trace(np.linalg.solve(cov_q, cov_p)) - d
                  + np.linalg.slogdet(cov_q)[1] - np.linalg.slogdet(cov_p)[1])


def objective_terms(A, sigma2: float = 0.01, B: float = 0.006, A_true=LINEAR_A_GT) -> tuple[float, float]:
    """(MLEO, PMO) of the model with parameter A, data from the model with parameter ``A_true``."""
    L = linear_cholesky_matrix(A, B)
    d = L.shape[0]
    psi = (sigma2 - B) * np.eye(d)
    L_true = linear_cholesky_matrix(A_true, B)
    cov_true = L_true @ L_true.T + psi
    mleo = _gaussian_kl(cov_true, L @ L.T + psi)
    precision = np.eye(d) + L.T @ np.linalg.solve(psi, L)
    pmo = 0.5 * (np.log(np.diag(precision)).sum() - np.linalg.slogdet(precision)[1])
    return float(mleo), float(pmo)


def neg_elbo_plus_const(A, sigma2: float = 0.01, B: float = 0.006, A_true=LINEAR_A_GT) -> float:
    """−ELBO + const = MLEO + PMO (the constant is the entropy of the true p(x))."""
    return sum(objective_terms(A, sigma2, B, A_true))


def global_optimum(sigma2: float = 0.01, B: float = 0.006, A_true=LINEAR_A_GT, starts: int = 20,
                   seed: int = 0) -> tuple[float, np.ndarray]:
    """The smallest −ELBO + const over A (multi-start BFGS) and the minimising A."""
    rng = np.random.default_rng(seed)
    d = np.asarray(A_true).shape[0]
    best = None
    for _ in range(starts):
        result = minimize(lambda a: neg_elbo_plus_const(a.reshape(d, d), sigma2, B, A_true),
                          rng.standard_normal(d * d), method="BFGS")
        if best is None or result.fun < best.fun:
            best = result
    return float(best.fun), best.x.reshape(d, d)
