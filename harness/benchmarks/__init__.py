"""Commands that print figures: what a device, a planner, a fit or a sweep's status costs.

Modules (import the one you need):

* ``steps``: timing of training steps of each architecture on one device (`ebt-scaling
  bench`), fed from random tokens or from a run spec's data pipeline, and the entries it
  merges into the throughput file that GPU-hour planning reads (sweeps/throughput.py);
* ``selftest``: acceptance of one device in one call (`ebt-scaling selftest`): training
  eager and compiled, exact resume, one-process data parallel, and the step timing beside
  the reference code's figures;
* ``status``: `status` on synthetic sweeps of thousands of runs (`ebt-scaling bench-status`).

They sit above every other layer (they time the trainer, the planner, the fits and the
dispatcher's reads) and below the CLI, whose commands stay thin.
"""
