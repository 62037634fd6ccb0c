"""Batched networks: one set of stacked weights holding M independent models."""

from fmvae.nn.batched import BatchedMLP
from fmvae.nn.vae import BatchedVAE, Labels

__all__ = ["BatchedMLP", "BatchedVAE", "Labels"]
