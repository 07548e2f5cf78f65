"""The EBT paper's numbers that the report and the headline show beside ours."""
from __future__ import annotations

# The paper's names of our axes (docs/ebt.md: scaling-rate advantages of EBT, arXiv v1).
# axis -> (the paper's name, advantage in v1 (%), advantage in a later revision (%) or None)
PAPER_ADVANTAGE = {"flops": ("FLOPs", 2.92, 8.97), "params": ("parameters", 2.91, 8.97),
                   "tokens": ("data", 35.98, None),
                   "width": ("embedding dim", 0.02, None), "depth": ("depth", 5.29, None),
                   "batch": ("batch size", 28.46, None)}

# The paper's headline numbers (docs/ebt.md, arXiv 2507.02092 v1) shown beside ours.
PAPER_HEADLINES = [
    "Scaling-rate advantage of EBT over Transformer++ (log-log slope ratio - 1), v1: data 35.98%, batch size "
    "28.46%, depth 5.29%, parameters 2.91%, FLOPs 2.92%, embedding dim 0.02%; a later revision: 8.97% for FLOPs "
    "and parameters. Single seed, no error bars, 4-5 points per axis.",
    "At every measured FLOP budget EBT's perplexity was worse (about 10x more FLOPs for equal perplexity); only its "
    "slope was steeper. Whether there is a crossover budget was left open.",
    "EBT / Transformer++ FLOPs per training step measured with FlopCounterMode on the reference code: 5.29 (xxs), "
    "6.55 (small); the paper's approximation 6.66 at K = 2.",
    "Table 3 perplexity, Transformer++ vs EBT: pretraining 31.36 vs 33.43; GSM8K 49.6 vs 43.3; SQuAD 52.3 vs 53.1; "
    "BIG-bench Elementary Math QA 79.8 vs 72.6; BIG-bench Dyck languages 131.5 vs 125.3.",
]
