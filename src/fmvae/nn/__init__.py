"""Batched networks: one set of stacked weights holding M independent models."""

from fmvae.nn.batched import BatchedMLP

__all__ = ["BatchedMLP"]
