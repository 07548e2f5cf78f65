"""Analytic parameter counts and FLOPs of one training step, for both architectures.

Two conventions (docs/flops.md: pick one as primary, report the others, apply the same
one to both models):

``paper``
    The EBT paper's approximations (v1 p.35-36). Transformer++: 6 N per token, N =
    non-embedding parameters. EBT: one refinement step is forward + backward + the extra
    backward of the Hessian-vector product over a doubled sequence, about 3.33x a
    Transformer++ step, so 20 N per token and step, 20 K N for K steps (6.66x at K = 2).
    N is each model's own non-embedding parameter count (models' ``param_counts()``).
    K includes the expected random_extra_steps; truncate_unroll is ignored (the paper
    gives no formula for it; ``full`` accounts for it). Replayed rows count like fresh
    ones (below).

``full``
    Every matmul the training step really executes, counted the way
    ``torch.utils.flop_counter.FlopCounterMode`` counts them (2 m n k per m x k @ k x n
    product; masked/causal attention entries counted in full; embedding lookups, norms,
    softmax, RoPE and other elementwise work count 0). Forward, backward and, for EBT, the
    inner backward dE/dp and the double backward through it. Vocabulary-sized matmuls
    (output head, EBT's V -> d candidate projection) included. Checked against
    FlopCounterMode on real training steps in tests/test_flops.py.

All counts are per training step for a batch of ``batch`` sequences of ``seq`` tokens;
per token = per step / (batch * seq). Every term is proportional to the batch, so FLOPs
per token depend on the sequence length (attention) but not on the batch.

EBT replay buffer (``replay_buffer_size`` > 0): every training forward of full-context
sequences runs on its fresh rows plus int(rows x replay_fraction) replayed ones, which
take the same steps, loss and backward. Both conventions count them, as batch x
replay_fraction extra rows per step (``ebt_replayed_rows``); the tokens a run has seen stay
the fresh ones, so the replay raises the EBT's FLOPs per token by (1 + replay_fraction).
That is exact whenever each forward's rows x replay_fraction is an integer no larger than
the buffer; the run's first forward per process (empty buffer) replays nothing, a
one-step over-count (docs/flops.md, "Replay buffer").

How the ``full`` EBT count arises (see models/ebt.py for the algorithm):

* Real stream (first-order only): forward F_r plus one backward of 2 F_r (gradient of
  every matmul's two operands) -- 3 F_r per run. It runs once per batch for variant
  ``default`` and once per step for ``time_embed`` (the step token changes it). Its last
  layer computes keys and values only. Its input is the S real tokens (+1 step token).
* Predicted stream, one trained step: forward F_p; inner backward dE/dx (create_graph)
  plus the update GEMM (-alpha dE/dx) @ W_v2e = F_p, since it computes only input
  gradients (one matmul per forward matmul: weight gradients are not requested, nor those
  of the real stream's keys/values); then the training backward differentiates both
  graphs w.r.t. both operands of each matmul: 2 F_p + 2 F_p. Three exceptions: the energy
  head's forward output is not used by dE/dx (d sum(E)/dE = 1), so it is never
  differentiated again; its inner backward matmul (ones @ W_e) has a constant left
  operand, so it is differentiated w.r.t. W_e only; and the candidate projection
  x = p @ W_v2e^T is differentiated w.r.t. W_v2e only (p needs no gradient). Total
  6 F_p - 3 * (2 d) - 2 d V_pad per token.
* Untrained step (``truncate_unroll``, all steps but the last): F_p + F_p (forward and
  dE/dp without a graph), plus a forward-only real stream for ``time_embed``.
* ``random_extra_steps`` = (lo, hi): the number of steps is K + U{lo..hi}; every count is
  affine in the number of steps, so the expected value uses K + (lo + hi) / 2.

GPU note: on CUDA the Transformer++ and the EBT real stream go through a fused SDPA
kernel (flash / memory-efficient). FlopCounterMode counts their forward as the same two
matmuls as here, but counts their backward as five matmuls (it includes the recomputation
of the score matrix that flash does) where the math path has four. A GPU measurement
therefore exceeds ``full`` by 2 * T^2 * d_model per layer and sequence for every fused
attention backward (T = attended length), i.e. 2 * T * d_model * layers per token: for xxs
with S = 256 and V = 50,277 about +0.7% for Transformer++ and +0.3% for EBT (time_embed,
K = 2; its predicted stream uses plain matmuls, so only the real stream is affected).
``count_training_step_flops`` forces the math backend, which this module matches exactly
(for expected step counts: on average).
"""
from __future__ import annotations

from ebt_scaling.harness.contract.architecture import FLOP_CONVENTIONS as CONVENTIONS
from ebt_scaling.harness.contract.model_config import ModelConfig

# ------------------------------------------------------------------ parameters


def block_params(config: ModelConfig) -> int:
    """One pre-norm block: wq, wk, wv, wo (d x d each), SwiGLU (3 d x hidden), two RMSNorms."""
    d, h = config.d_model, config.hidden
    return 4 * d * d + 3 * d * h + 2 * d


def transformer_param_counts(config: ModelConfig) -> dict[str, int]:
    """{"total", "non_embedding"} exactly as the built model's ``param_counts()`` reports.
    Embedding (excluded from non_embedding): the token table and the output head.
    Non-embedding: the blocks and the final norm."""
    backbone = config.n_layers * block_params(config) + config.d_model  # blocks + final RMSNorm
    embedding = 2 * config.vocab_size * config.d_model  # tok_emb + lm_head
    return {"total": embedding + backbone, "non_embedding": backbone}


def ebt_param_counts(config: ModelConfig) -> dict[str, int]:
    """As ``transformer_param_counts``. Embedding: the token table, the V -> d candidate
    projection and (time_embed) the K x d step table. Non-embedding: the blocks, the final
    norm, the d -> 1 energy head and alpha."""
    d, v, o = config.d_model, config.vocab_size, config.options
    backbone = config.n_layers * block_params(config) + d
    step_table = o.refine_steps * d if o.variant == "time_embed" else 0
    embedding = 2 * v * d + step_table
    non_embedding = backbone + d + 1
    return {"total": embedding + non_embedding, "non_embedding": non_embedding}


def param_counts(config: ModelConfig) -> dict[str, int]:
    """{"total", "non_embedding"} of any registered architecture, analytic (no model built)."""
    return config.architecture.param_counts(config)


# ------------------------------------------------------------------ forward matmul pieces
# Each returns the FLOPs of one *forward* pass (2 multiply-adds per product entry).


def matmul_flops(m: int, k: int, n: int) -> int:
    """(m x k) @ (k x n): 2 m k n, FlopCounterMode's mm/bmm formula."""
    return 2 * m * k * n


def projection_flops_per_token(config: ModelConfig) -> int:
    """One block's weight matmuls per token: q, k, v, o (d -> d each) and SwiGLU's gate,
    up (d -> hidden) and down (hidden -> d): 8 d^2 + 6 d hidden."""
    d, h = config.d_model, config.hidden
    return 4 * matmul_flops(1, d, d) + 3 * matmul_flops(1, d, h)


def kv_projection_flops_per_token(config: ModelConfig) -> int:
    """Keys and values only (the EBT real stream's last layer): 4 d^2."""
    return 2 * matmul_flops(1, config.d_model, config.d_model)


def attention_flops(config: ModelConfig, queries: int, keys: int) -> int:
    """Score (Q K^T) and value (A V) matmuls of one layer for one sequence, all heads:
    2 * (2 queries keys d). Causal masking is not subtracted: the matmuls are dense."""
    return 2 * matmul_flops(queries, config.d_model, keys)


def vocab_matmul_flops_per_token(config: ModelConfig) -> int:
    """A d x V matmul per token: Transformer++'s output head or EBT's candidate
    projection p @ W_v2e. It runs at the padded vocabulary (ModelConfig.padded_vocab_size),
    so that is what is executed and counted. (Embedding lookups are gathers: 0.)"""
    return matmul_flops(1, config.d_model, config.padded_vocab_size)


def energy_head_flops_per_token(config: ModelConfig) -> int:
    """EBT's d -> 1 energy head."""
    return matmul_flops(1, config.d_model, 1)


# ------------------------------------------------------------------ full convention


def transformer_forward_flops(config: ModelConfig, batch: int, seq: int) -> int:
    """Transformer++ forward: L blocks over S tokens (causal attention S x S), output head."""
    per_token = config.n_layers * projection_flops_per_token(config) + vocab_matmul_flops_per_token(config)
    per_sequence = config.n_layers * attention_flops(config, seq, seq)
    return batch * (seq * per_token + per_sequence)


def transformer_step_flops(config: ModelConfig, batch: int, seq: int) -> int:
    """Forward + backward; the backward computes both operands' gradients of every matmul
    (the first block's input gradient too: it flows into the embedding table): 3x forward."""
    return 3 * transformer_forward_flops(config, batch, seq)


def ebt_real_stream_forward_flops(config: ModelConfig, batch: float, seq: int) -> float:
    """One run of the real stream: S tokens (+1 step token for time_embed); L-1 full
    blocks with causal attention, then the last layer's keys and values only. batch: the
    rows it runs on (replayed ones included)."""
    t = seq + (1 if config.options.variant == "time_embed" else 0)
    full_blocks = config.n_layers - 1
    per_token = full_blocks * projection_flops_per_token(config) + kv_projection_flops_per_token(config)
    per_sequence = full_blocks * attention_flops(config, t, t)
    return batch * (t * per_token + per_sequence)


def ebt_predicted_stream_forward_flops(config: ModelConfig, batch: float, seq: int) -> float:
    """One energy evaluation of S candidates: the V -> d candidate projection, L blocks
    whose attention is S queries x (S [+1 step token]) context keys (the self score is an
    elementwise product, 0), and the d -> 1 energy head."""
    context = seq + (1 if config.options.variant == "time_embed" else 0)
    per_token = (vocab_matmul_flops_per_token(config) + config.n_layers * projection_flops_per_token(config)
                 + energy_head_flops_per_token(config))
    per_sequence = config.n_layers * attention_flops(config, seq, context)
    return batch * (seq * per_token + per_sequence)


def ebt_expected_steps(config: ModelConfig) -> float:
    """K plus the mean of random_extra_steps U{lo..hi} (0 when off)."""
    lo, hi = config.options.random_extra_steps
    return config.options.refine_steps + (lo + hi) / 2


def ebt_replayed_rows(config: ModelConfig, batch: int, seq: int) -> float:
    """Replayed sequences a training step on `batch` fresh ones adds once the replay
    buffer holds records: batch x replay_fraction. The model appends int(rows x fraction)
    per forward, and the forwards a step splits into (micro-batches, processes) are not
    known here; the proportional count keeps FLOPs per token independent of the batch and
    equals the model's whenever each forward's rows x fraction is an integer (no larger
    than the buffer). 0 without a buffer or for sequences shorter than the context:
    records are context long, so only full-context batches replay."""
    e = config.options
    if not e.replay_buffer_size or seq != config.context:
        return 0.0
    return batch * e.replay_fraction


def ebt_training_rows(config: ModelConfig, batch: int, seq: int) -> float:
    """Sequences a training step runs through the EBT: the fresh ones and the replayed."""
    return batch + ebt_replayed_rows(config, batch, seq)


def ebt_step_flops(config: ModelConfig, batch: int, seq: int) -> float:
    """Expected FLOPs of one EBT training step on `batch` fresh sequences, replayed rows
    included (see the module docstring)."""
    e = config.options
    n_steps = ebt_expected_steps(config)
    n_trained = 1.0 if e.truncate_unroll else n_steps
    n_untrained = n_steps - n_trained

    rows = ebt_training_rows(config, batch, seq)
    real = ebt_real_stream_forward_flops(config, rows, seq)
    pred = ebt_predicted_stream_forward_flops(config, rows, seq)
    head = rows * seq * energy_head_flops_per_token(config)
    vocab = rows * seq * vocab_matmul_flops_per_token(config)
    # Trained step: forward + dE/dp + double backward (6 F_p), less the energy head's
    # forward never being re-differentiated (2 x head) and its inner-backward matmul being
    # differentiated w.r.t. the weight only (1 x head). The candidate projection's input p
    # needs no gradient, so its backward is the weight gradient alone (-1 x vocab); the
    # inner backward stops at x = p @ W_v2e^T and the update GEMM (-alpha dE/dx) @ W_v2e
    # stands in for its matmul, with a full two-operand backward.
    pred_trained = 6 * pred - 3 * head - vocab
    pred_untrained = 2 * pred  # forward + dE/dx + the update GEMM, no graph kept

    if e.variant == "time_embed":  # the real stream runs every step
        real_total = n_trained * 3 * real + n_untrained * real
    else:  # once per batch, always with its (first-order) backward
        real_total = 3 * real
    return real_total + n_trained * pred_trained + n_untrained * pred_untrained


# ------------------------------------------------------------------ public entry points


def transformer_paper_step_flops(config: ModelConfig, batch: int, seq: int) -> float:
    """6 N per token, N = non-embedding parameters."""
    return 6.0 * transformer_param_counts(config)["non_embedding"] * batch * seq


def ebt_paper_step_flops(config: ModelConfig, batch: int, seq: int) -> float:
    """20 K N per token: about 3.33 x a Transformer's 6 N per refinement step, for every
    token the step refines, replayed ones included (docs/flops.md, "Replay buffer")."""
    rows = ebt_training_rows(config, batch, seq)
    return 20.0 * ebt_expected_steps(config) * ebt_param_counts(config)["non_embedding"] * rows * seq


def training_step_flops(config: ModelConfig, batch: int, seq: int | None = None, convention: str = "full") -> float:
    """FLOPs of one training step on a batch x seq batch (seq defaults to config.context),
    in any convention, for any registered architecture."""
    seq = config.context if seq is None else seq
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if batch < 1 or seq < 1:
        raise ValueError(f"batch and seq must be >= 1, got {batch} and {seq}")
    return float(config.architecture.step_flops[convention](config, batch, seq))


def flops_per_token(config: ModelConfig, convention: str = "full", seq_len: int | None = None) -> float:
    """Training FLOPs per token: training_step_flops / (batch * seq); batch-independent."""
    seq = config.context if seq_len is None else seq_len
    return training_step_flops(config, 1, seq, convention) / seq


# ------------------------------------------------------------------ measurement


def count_training_step_flops(model, inputs, targets) -> int:
    """Run two real training steps (model.step(...).loss.backward()) and return the FLOPs
    FlopCounterMode counted in the second. The first, uncounted, fills the per-process
    state a run's first step lacks (the EBT's replay buffer is empty until then, so that
    step replays nothing), so the count is a steady-state step: the one ``full`` models
    and the one bench times. Gradients of both are accumulated into the model's
    parameters as in training; the caller owns zeroing them.

    SDPA is forced to its math backend: FlopCounterMode has no formula for the CPU flash
    kernel (it would count 0), and the math path's four backward bmms are what ``full``
    counts. On GPU the flash/efficient backward formula adds a recomputed score matmul (5
    bmms instead of 4): see the module docstring for the size of that difference.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel  # measuring needs torch; counting does not

    was_training = model.training
    model.train()
    try:
        with sdpa_kernel(SDPBackend.MATH):
            model.step(inputs, targets).loss.backward()
            with _global_flop_counter() as counter:
                model.step(inputs, targets).loss.backward()
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


class _NoModuleTracking:
    """Stands in for FlopCounterMode's ModuleTracker: every FLOP goes to "Global"."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args) -> None:
        return None


def _global_flop_counter():
    """FlopCounterMode(display=False) without its per-module breakdown.

    The ModuleTracker it installs hooks every module input that requires grad; when such
    a tensor is a leaf -- the EBT's embedded candidate x, the input of its inner gradient
    dE/dx -- the gradient call fails with "A leaf node was passed to
    _will_engine_execute_node" (pytorch/pytorch#131753, open). Only the global total is
    needed here, so the tracker is replaced by one that tracks nothing; the counting
    itself (FlopCounterMode's formula registry and dispatch mode) is unchanged.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracking()
    return counter
