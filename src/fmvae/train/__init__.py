"""Training of batched ensembles: the generic loop, the LIN schedule, restarts and selection."""
