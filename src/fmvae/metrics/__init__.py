"""Metrics: quadrature posteriors and densities (more in later modules)."""
