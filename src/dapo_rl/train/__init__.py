"""The training step, the policy update, checkpoints and the run loop."""
