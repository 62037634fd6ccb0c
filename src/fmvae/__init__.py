"""Reproduction package for "Failure Modes of Variational Autoencoders and Their Effects on
Downstream Tasks" (Yacoby, Pan & Doshi-Velez)."""

__version__ = "0.1.0"
