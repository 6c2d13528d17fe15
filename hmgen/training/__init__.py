"""The training loop, checkpoints and resume."""
