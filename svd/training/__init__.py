"""Training: the objectives and train step, its checkpoints, log and data sink."""
