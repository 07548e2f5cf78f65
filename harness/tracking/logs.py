"""The package's log output: one handler on the ``ebt_scaling`` logger, set up once per process.

Library code logs through ``logging.getLogger(__name__)`` and never prints; whoever owns the
process decides where the lines go:

* the CLI (harness/cli/main.py) sends them to stderr, at the level ``-v`` / ``-q`` chose, so a
  command's own output on stdout (``plan --json``, ``train``'s result line) stays clean;
* a training job (harness/dispatch/job.py) sends them to stdout -- a SLURM job's ``.out``
  file -- unless the process configured logging already (an in-process debug submission
  keeps the CLI's choice).

Lines go through ``tqdm.write``, which clears a progress bar on the terminal, prints, and
redraws the bar, so a bar and log lines never tear each other. The stream is looked up at
every line (``sys.stdout`` / ``sys.stderr`` by name): a test's captured stream, or the
devnull the CLI puts in place after a closed pipe, is the one written to.
"""
from __future__ import annotations

import logging
import sys
from typing import Literal

PACKAGE_LOGGER = "ebt_scaling"
FORMAT = "%(asctime)s %(levelname)s %(message)s"
DEBUG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # -v: which module spoke
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"  # weeks-long jobs: the date matters

Stream = Literal["stdout", "stderr"]


class TqdmStreamHandler(logging.Handler):
    """Writes each record through tqdm.write to sys.stdout or sys.stderr (looked up per line)."""

    def __init__(self, stream: Stream):
        super().__init__()
        self.stream_name = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            stream = getattr(sys, self.stream_name)
            tqdm.write(self.format(record), file=stream)
            stream.flush()  # a job's stdout is a file: block-buffered, and the .out must be current
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def level_for(verbose: int, quiet: bool) -> int:
    """-q: warnings and errors; default: info (the per-step lines); -v: debug."""
    if quiet:
        return logging.WARNING
    return logging.DEBUG if verbose > 0 else logging.INFO


def package_handler() -> TqdmStreamHandler | None:
    return next((h for h in logging.getLogger(PACKAGE_LOGGER).handlers if isinstance(h, TqdmStreamHandler)), None)


def configure_logging(level: int = logging.INFO, stream: Stream = "stderr") -> None:
    """Route the package logger to `stream` at `level`; a second call replaces both (one handler)."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    handler = package_handler()
    if handler is None:
        handler = TqdmStreamHandler(stream)
        logger.addHandler(handler)
    handler.stream_name = stream
    handler.setFormatter(logging.Formatter(DEBUG_FORMAT if level <= logging.DEBUG else FORMAT, DATE_FORMAT))
    logger.setLevel(level)


def ensure_logging(stream: Stream = "stdout") -> None:
    """Configure at the default level unless this process did already (the CLI did, in-process)."""
    if package_handler() is None:
        configure_logging(logging.INFO, stream)
