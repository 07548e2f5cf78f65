"""End-of-run evaluations: held-out and downstream perplexity, EBT thinking, contamination.

Modules (import the one you need; importing this package imports no torch, since the
contract loads the task grammar through it when a spec is validated):

* ``task_grammar``: the task-name grammar of ``EvalSpec.tasks`` (torch-free; registered
  through the ``ebt_scaling.eval_task_grammars`` entry point, which spec validation asks);
* ``tasks``: downstream sets (generated Dyck / arithmetic, GSM8K, SQuAD v1.1, BIG-bench
  task.json), the paper's "Question: {q}\\nAnswer: {a}" format, tokenising and batching;
* ``perplexity``: exp of the token-mean NLL over a list of batches;
* ``contamination``: n-gram overlap of evaluation examples with the training split;
* ``thinking``: EBT perplexity against refinement steps (with / without Langevin noise),
  best-of-N by minimum energy, energy-as-verifier AUROC;
* ``run_evals``: the entry point (``run_evals(model, spec, dataset)``) used by the trainer
  at the end of a run and by ``ebt-scaling eval``.

The report's Table-3-style table and thinking plot are the analysis's (analysis/evaluations.py).
"""
