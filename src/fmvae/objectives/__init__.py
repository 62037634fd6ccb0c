"""Training objectives as pure functions returning per-model, per-point values (docs/methods.md §2).

Every objective has the signature ``objective(model, x, eps, hyper) -> (M, N)``: ``model`` is a
:class:`fmvae.nn.BatchedVAE`, ``x`` (M, N, D) the data each model sees, ``eps`` (M, N, S, K)
standard-normal draws for the reparameterisation (S = the largest sample count in the stack) and
``hyper`` the per-model hyper-parameters as tensors of shape (M,). Values are bounds on log p(x) to
be maximised. Register a new objective in ``OBJECTIVES`` (and a method using it in
:mod:`fmvae.methods`) to make it selectable from the config.
"""

from fmvae.objectives import semi_supervised, unsupervised
from fmvae.objectives.unsupervised import elbo, iwae, log_normal

OBJECTIVES = {**unsupervised.OBJECTIVES, **semi_supervised.OBJECTIVES}

__all__ = ["OBJECTIVES", "elbo", "iwae", "log_normal"]
