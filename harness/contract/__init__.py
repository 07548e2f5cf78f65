"""The torch-free contract every other layer builds on: errors, typed config, the run
spec, the run directory and its state. Nothing here imports torch or a higher layer."""
