"""The command line, the top layer: ``main.py`` parses ``ebt-scaling [-v|-q] COMMAND ...``
and turns every ConfigError and DispatchError into one line (exit status 2); each other
module is one subcommand, exposing ``add_arguments(parser)`` and ``run(args) -> int``,
imported only when its command runs. ``python -m ebt_scaling.harness.cli`` is the same
command as ``ebt-scaling`` (``__main__.py``)."""
