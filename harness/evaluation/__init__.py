"""End-of-run evaluations: held-out and downstream perplexity, EBT thinking, contamination.

Modules (import the one you need; the task-name grammar of ``EvalSpec.tasks`` lives in the
contract, harness/contract/eval_tasks.py, since a spec is validated when it loads):

* ``tasks``: downstream sets (generated Dyck / arithmetic, GSM8K, SQuAD v1.1, BIG-bench
  task.json), the paper's "Question: {q}\\nAnswer: {a}" format, tokenising and batching;
* ``perplexity``: exp of the token-mean NLL over a list of batches;
* ``contamination``: n-gram overlap of evaluation examples with the training split;
* ``thinking``: EBT perplexity against refinement steps (with / without Langevin noise),
  best-of-N by minimum energy, energy-as-verifier AUROC;
* ``run_evals``: the entry point (``run_evals(model, spec, dataset)``) used by the trainer
  at the end of a run and by ``ebt-scaling eval``;
* ``report``: Table-3-style table and the thinking plot for the analysis report.
"""
