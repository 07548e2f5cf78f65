"""Paired scaling sweeps: typed sweep files (sweep_spec), the registered axes (axes) and
token / LR / batch / warmup / beta2 rules (rules), shapes, planning into RunSpecs
(generate), GPU-hour rates (throughput), tuning trials, cooldown branches, the plan's
files (plan_table) and `plan --extend` (extend)."""
