"""Tables and figures, reading only HDF5 results."""
