"""Training a run and timing training steps: the trainer (exact resume, divergence,
evaluation points), checkpoints, the LR schedule, data-parallel processes, benchmarks."""
