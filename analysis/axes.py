"""The axes a sweep's final losses are fitted against, and the names of their units.

Every sweep is fitted against FLOPs (the chosen convention), parameters N and tokens D; a
sweep along width, depth or batch size is also fitted against its own axis.
"""
from __future__ import annotations

OWN_AXIS_COLUMNS = {"width": "d_model", "depth": "n_layers", "batch": "batch_size"}   # sweep axis -> run-table column
AXIS_UNITS = {"flops": "FLOPs", "params": "parameters", "tokens": "tokens", "width": "d_model", "depth": "layers",
              "batch": "sequences per step"}
