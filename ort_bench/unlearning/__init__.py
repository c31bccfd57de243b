"""Checkpoints to measure: the reference unlearning methods, running them, and attacks on their outputs."""
