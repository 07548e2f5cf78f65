"""The built-in backends, one module each, registered through the ``ebt_scaling.backends``
entry point (pyproject.toml): slurm (job arrays), local (submitit workers on this
machine's GPUs or CPU) and debug (in this process)."""
