"""Data: ground-truth generators, surrogate fits, simulation, the UCI sets and the HDF5 store."""
