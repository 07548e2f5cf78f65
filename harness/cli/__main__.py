"""``python -m ebt_scaling.harness.cli``: the ``ebt-scaling`` command."""
import sys

from .main import main

sys.exit(main())
