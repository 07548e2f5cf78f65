"""Training a run: the trainer (exact resume, divergence, evaluation points), checkpoints,
the LR schedule, data-parallel processes, cooldown branches, progress and provenance.
(Timing training steps and the device selftest live in harness/benchmarks/.)"""
