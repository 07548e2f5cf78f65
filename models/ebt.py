"""Energy-Based Transformer for autoregressive text (Gladstone et al. 2025, docs/ebt.md).

Prediction is optimisation. For every position i the model holds a candidate
distribution over the next token, starts it from random logits and takes K gradient
steps on a learned scalar energy:

    p_k     = softmax(y_k)                    # step in probability space
    E_k     = energy(context, p_k)            # one scalar per position
    y_{k+1} = p_k - alpha * dE_k/dp_k         # read as the logits of the next candidate
    loss    = mean_k CE(y_{k+1}, next token)  # backprop goes through dE/dp: 2nd order

The energy network is one Transformer++ backbone run over two streams that share every
weight:

* the *real* stream: causal self-attention over the real tokens (plus, for the
  ``time_embed`` variant, a learned step-index token at position 0 that everybody sees);
* the *predicted* stream: candidate i, embedded as p_i @ W_v2e, attends to real tokens
  0..i and to itself only; a final RMSNorm and a d -> 1 head give its energy.

What this implementation saves, and why it is allowed:

* The real stream never depends on the candidate, so dE/dp never flows through it. It
  only needs a first-order backward, which is why it can use fused SDPA kernels (they
  have no double backward), and its output only matters as per-layer keys/values: the
  last layer computes keys and values and nothing else.
* ``default`` variant: the real stream is identical in every step, so it runs once per
  batch and its keys/values are reused by all K steps.
* ``time_embed`` variant: real tokens attend to the step token, so the real stream
  differs between steps and runs once per step (K times). It still needs no double
  backward.
* Candidates only see themselves, so energy_i depends on p_i alone and
  d(sum_i E_i)/dp gives every position's gradient in one backward.

The vocabulary-sized work (B x S x V per pass: it dominates small models) is kept minimal:

* The inner gradient is taken w.r.t. the embedded candidate x = p @ W_v2e^T (d wide), not
  p: dE/dp = dE/dx @ W_v2e. The update is then one GEMM, y_next = p + (-alpha dE/dx) @ W_v2e,
  with alpha applied to the d-wide factor. Nothing computes a gradient for p itself, and
  the training backward has one V-sized matmul less (the input gradient of p @ W_v2e^T).
* Candidates are V_pad wide (VocabPadding: a multiple of 64, so the GEMMs run on aligned
  tensor-core kernels); the padding holds a masked logit, which the update GEMM writes
  through its bias, so softmax and cross-entropy see exactly the V real columns.
* Candidates stay float32 (bf16 autocast casts only the GEMM operands).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ebt_scaling.harness.contract.model_config import ModelConfig

from .base import IGNORE_INDEX, LanguageModel, StepOutput
from .cross_entropy import cross_entropy
from .layers import NORM_EPS, Block, RMSNorm, Rotary, VocabPadding, at_least_fp32, init_model

KeysValues = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class ThinkResult:
    """Inference-time refinement ("thinking") on a batch.

    nll: (steps, B, S) next-token NLL of the candidate after each step (0 at pads);
    energy: (steps + 1, B, S) energy of the candidate before each step and of the final
    one (steps only, when think() was told to skip the final one); logits: (B, S, V) the
    final candidate. With several samples each position keeps the sample whose final
    energy is lowest (self-verification).
    """

    nll: torch.Tensor
    energy: torch.Tensor
    logits: torch.Tensor


class EBT(LanguageModel):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c, e = config, config.options
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.candidate_proj = nn.Linear(c.vocab_size, c.d_model, bias=False)  # W_v2e
        self.step_emb = nn.Embedding(e.refine_steps, c.d_model) if e.variant == "time_embed" else None
        self.rotary = Rotary(c.head_dim, c.context + 2, c.rope_theta)
        eps = NORM_EPS[c.init]
        self.blocks = nn.ModuleList(Block(c.d_model, c.n_heads, c.hidden, self.rotary, eps) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.d_model, eps)
        self.energy_head = nn.Linear(c.d_model, 1, bias=False)
        self.vocab_pad = VocabPadding(c.vocab_size, c.padded_vocab_size)
        init_model(self, c)
        self.alpha = nn.Parameter(torch.tensor(float(e.alpha_init)), requires_grad=e.learn_alpha)
        self.alpha._own_optimizer_group = True  # its own LR multiplier and no weight decay
        if e.replay_buffer_size:
            # Each data-parallel process fills its own buffer, so it is checkpointed per
            # process (process_state), not in the shared state_dict. A record is one training
            # sequence (inputs and targets) with the final candidate of its chain.
            size = e.replay_buffer_size
            self.register_buffer("replay_inputs", torch.zeros(size, c.context, dtype=torch.long), persistent=False)
            self.register_buffer("replay_targets", torch.zeros(size, c.context, dtype=torch.long), persistent=False)
            self.register_buffer("replay_logits", torch.zeros(size, c.context, c.vocab_size), persistent=False)
            self.replay_count = 0  # records ever stored, on the host: no device sync to read it

    # ------------------------------------------------------------------ pieces
    @property
    def _offset(self) -> int:
        """Context entries before real token 0 (the step token, if any)."""
        return 1 if self.step_emb is not None else 0

    @property
    def _candidate_dtype(self) -> torch.dtype:
        """Candidates live in float32 (float64 when the model is float64), never in bf16."""
        return torch.promote_types(self.candidate_proj.weight.dtype, torch.float32)

    def _landscape(self, step: int) -> int:
        """Which energy landscape refinement step `step` descends: its step token for
        time_embed (steps beyond the trained ones reuse the last), the one landscape for
        default. Also what the compiled real stream specialises on, so it stays a few graphs."""
        return min(step, self.config.options.refine_steps - 1) if self.step_emb is not None else 0

    def real_stream(self, token_emb: torch.Tensor, landscape: int) -> KeysValues:
        """Per-layer keys/values of the real tokens (plus, for time_embed, the step token of
        `landscape`, see _landscape)."""
        h = token_emb
        if self.step_emb is not None:
            h = torch.cat((self.step_emb.weight[landscape].expand(h.shape[0], 1, -1).to(h.dtype), h), dim=1)
        kvs: KeysValues = []
        for block in self.blocks[:-1]:
            h, kv = block(h)
            kvs.append(kv)
        kvs.append(self.blocks[-1].context_keys_values(h, 0))  # the rest of the last layer is unused
        return kvs

    def energy(self, probs: torch.Tensor, kvs: KeysValues) -> torch.Tensor:
        """Energy (B, S) of candidate distributions probs (B, S, V) given the real stream."""
        return self.embedded_energy(self.candidate_proj(probs), kvs)

    def embedded_energy(self, x: torch.Tensor, kvs: KeysValues) -> torch.Tensor:
        """Energy (B, S) of embedded candidates x = probs @ W_v2e^T (B, S, d)."""
        # Real tokens sit at positions offset..offset+S-1; candidate i predicts token i+1.
        start = self._offset + 1
        for block, kv in zip(self.blocks, kvs):
            x = block.forward_candidates(x, start, kv, self._offset)
        return self.energy_head(self.norm(x)).squeeze(-1)

    def _initial_candidates(self, batch: int, seq: int, ref: torch.Tensor) -> torch.Tensor:
        return torch.randn(batch, seq, self.config.vocab_size, device=ref.device, dtype=self._candidate_dtype)

    def _replayed(self, rows: int, seq: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(inputs, targets, final candidates) of int(rows x replay_fraction) stored records,
        drawn without replacement from those held (fewer while the buffer holds fewer; None
        when empty). The sequences come back with their own candidates, so each continues
        its own chain. Only full-context batches replay: records are context long."""
        held = min(self.replay_count, self.config.options.replay_buffer_size)
        n = min(int(rows * self.config.options.replay_fraction), held)
        if n == 0 or seq != self.config.context:
            return None
        pick = torch.randperm(held, device=self.replay_logits.device)[:n]
        return self.replay_inputs[pick], self.replay_targets[pick], self.replay_logits[pick]

    @torch.no_grad()
    def _remember(self, inputs: torch.Tensor, targets: torch.Tensor, y: torch.Tensor) -> None:
        """Store each fresh sequence with its final candidate; the oldest records make room."""
        if inputs.shape[1] != self.config.context:
            return
        size = self.config.options.replay_buffer_size
        keep = min(inputs.shape[0], size)  # a batch larger than the buffer keeps its last rows
        inputs, targets, y = inputs[-keep:], targets[-keep:], y[-keep:]
        slots = (torch.arange(keep, device=inputs.device) + self.replay_count + inputs.shape[0] - keep) % size
        self.replay_inputs[slots] = inputs
        self.replay_targets[slots] = targets
        self.replay_logits[slots] = self.vocab_pad.unpad(y.detach()).to(self.replay_logits.dtype)
        self.replay_count += inputs.shape[0]

    def _alpha_factor(self, like: torch.Tensor, random_scale: float) -> torch.Tensor | None:
        """A random step-size factor U[1/s, s] per position (B, S, 1), or None when off."""
        if random_scale <= 1:
            return None
        lo, hi = 1.0 / random_scale, random_scale
        return lo + (hi - lo) * torch.rand(*like.shape[:-1], 1, device=like.device)

    def _descend(self, y: torch.Tensor, kvs: KeysValues, proj: torch.Tensor, create_graph: bool, sigma: float,
                 alpha_factor: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One refinement step from padded logits y (B, S, V_pad): returns (next logits,
        energy of softmax(y)). proj: W_v2e with padding columns, (d, V_pad). create_graph:
        keep the graph so that the training loss differentiates through the step.
        alpha_factor: a random step-size factor per position, or None."""
        y = y.detach()
        if sigma > 0:  # random draws stay outside the (possibly compiled) refinement step
            y = y + sigma * torch.randn_like(y)
        alpha = self.alpha.clamp(min=self.config.options.alpha_min)
        if alpha_factor is not None:
            alpha = alpha * alpha_factor
        if self.training and self.config.options.replay_buffer_size:
            # the batch is B, then B + n replayed rows: one compiled graph for both sizes
            torch._dynamo.maybe_mark_dynamic(y, 0)
            if alpha.dim():
                torch._dynamo.maybe_mark_dynamic(alpha, 0)
        with torch.set_grad_enabled(create_graph):
            return self._refine(y, kvs, proj, alpha)

    def _refine(self, y: torch.Tensor, kvs: KeysValues, proj: torch.Tensor,
                alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The refinement step proper, a pure function of its inputs and the weights.

        dE/dx comes from torch.func rather than autograd.grad(create_graph=True): the step
        is then an ordinary first-order function whose backward (the training loss's
        second-order term) AOTAutograd can derive, so torch.compile compiles the whole step
        and its backward (compile_hot_path). Eager, both give the same numbers."""
        probs = torch.softmax(y, dim=-1)  # exactly 0 on the padding
        x = F.linear(probs, proj)
        grad_x, (_, energy) = torch.func.grad_and_value(self._summed_energy, has_aux=True)(x, kvs)
        # p - alpha dE/dp = p + (-alpha dE/dx) @ W_v2e; the GEMM's bias masks the padding.
        update = self.vocab_pad.logits(grad_x * -alpha, proj.t())
        return probs + update, energy

    def _summed_energy(self, x: torch.Tensor, kvs: KeysValues) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of energies, energies): candidates only see themselves, so the gradient of
        the sum is every position's own dE/dx."""
        energy = self.embedded_energy(x, kvs)
        return energy.sum(), energy

    def compile_hot_path(self) -> None:
        """The refinement step with its backward, and the real stream (first order only)."""
        self._refine = torch.compile(self._refine)
        self.real_stream = torch.compile(self.real_stream)

    # ------------------------------------------------------------------ training
    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> StepOutput:
        e = self.config.options
        fresh = inputs.shape[0]
        replay = self.training and e.replay_buffer_size > 0
        replayed = self._replayed(fresh, inputs.shape[1]) if replay else None
        if replayed is not None:  # the batch grows by the replayed sequences (fresh rows first)
            inputs, targets = torch.cat((inputs, replayed[0])), torch.cat((targets, replayed[1]))
        batch, seq = inputs.shape
        token_emb = self.tok_emb(inputs)
        if replay:  # the batch is B, then B + n: one compiled graph for both, not one per size
            torch._dynamo.maybe_mark_dynamic(token_emb, 0)
        n_steps = e.refine_steps
        if self.training and e.random_extra_steps[1] > 0:
            lo, hi = e.random_extra_steps
            n_steps += int(torch.randint(lo, hi + 1, ()))
        elif not self.training:
            n_steps = e.validation_steps
        # Training and validation both take the trained noise, as the reference code does;
        # the random step size is training only.
        sigma = e.langevin_sigma
        alpha_scale = e.alpha_random_scale if self.training else 1.0
        y = self._initial_candidates(batch, seq, inputs)
        if replayed is not None:
            y[fresh:] = replayed[2].to(y.dtype)
        y = self.vocab_pad.pad(y)
        once = self._alpha_factor(y, alpha_scale) if e.alpha_random_draw == "forward" else None
        proj = self.vocab_pad.columns(self.candidate_proj.weight)  # once per batch, shared by every step
        kvs: KeysValues | None = None
        losses, energies = [], []
        learning = self.training and torch.is_grad_enabled()
        for k in range(n_steps):
            trained = learning and (not e.truncate_unroll or k == n_steps - 1)
            if kvs is None or self.step_emb is not None:
                # default variant: one real stream serves every step, so it keeps its graph
                # whenever any step is trained; time_embed: only a trained step needs it.
                with torch.set_grad_enabled(trained if self.step_emb is not None else learning):
                    kvs = self.real_stream(token_emb, self._landscape(k))
            factor = once if e.alpha_random_draw == "forward" else self._alpha_factor(y, alpha_scale)
            y, energy = self._descend(y, kvs, proj, create_graph=trained, sigma=sigma, alpha_factor=factor)
            energies.append(energy.detach())
            if trained or not learning:
                losses.append(cross_entropy(y, targets, IGNORE_INDEX))
        if replay:  # fresh sequences only: a replayed chain is not stored again
            self._remember(inputs[:fresh], targets[:fresh], y[:fresh])
        mask = (targets != IGNORE_INDEX).float()
        n_tokens = mask.sum()
        gap = ((energies[0] - energies[-1]) * mask).sum() / n_tokens.clamp(min=1)
        loss = torch.stack(losses).mean()
        ce = losses[-1].detach()
        if replayed is not None:  # the logged CE is the fresh rows' (replayed chains start converged)
            with torch.no_grad():
                ce = cross_entropy(y[:fresh], targets[:fresh], IGNORE_INDEX)
        return StepOutput(loss, {"ce": ce, "ce_mean_steps": loss.detach(),
                                 "energy_gap": gap, "alpha": self.alpha.detach().clamp(min=e.alpha_min),
                                 "tokens": n_tokens})

    # ------------------------------------------------------------------ inference
    @property
    def landscapes(self) -> int:
        """Distinct energy landscapes: one per trained step with a step token (time_embed),
        one in all for the default variant."""
        return self.config.options.refine_steps if self.step_emb is not None else 1

    def validation_schedule(self) -> list[int]:
        """The landscape of each step of a deterministic forward (validation): the trained
        steps, then the most extra steps training draws, on the last landscape."""
        return [self._landscape(k) for k in range(self.config.options.validation_steps)]

    def thinking_schedule(self, protocol: str, n: int) -> list[int]:
        """The landscape of each refinement step when thinking with `n` (docs/ebt.md):

        * "paper": n steps on each landscape in turn (the reference code's inference, so
          time_embed takes landscapes x n steps in all; the default variant n);
        * "final_landscape": n steps in all, those beyond the trained ones on the last
          landscape."""
        if protocol == "paper":
            return [landscape for landscape in range(self.landscapes) for _ in range(n)]
        if protocol == "final_landscape":
            return [self._landscape(k) for k in range(n)]
        raise ValueError(f"thinking protocol must be 'paper' or 'final_landscape', got {protocol!r}")

    def think(self, inputs: torch.Tensor, targets: torch.Tensor, schedule: list[int] | None = None,
              samples: int = 1, langevin_sigma: float = 0.0, final_energy: bool = True) -> ThinkResult:
        """Refine along `schedule` (the landscape of each step, any length; default the
        validation schedule, which with the trained `langevin_sigma` is the validation
        protocol, token_nll) from `samples` random starts; each position keeps the sample
        with the lowest final energy. The step size is the trained alpha, never randomised.
        Without `final_energy` (one sample only) the extra energy pass over the final
        candidate is skipped and `energy` holds the energies before each step."""
        if samples > 1 and not final_energy:
            raise ValueError("think: best-of-N (samples > 1) needs final_energy=True to choose")
        schedule = self.validation_schedule() if schedule is None else list(schedule)
        if not schedule or not all(0 <= landscape < self.landscapes for landscape in schedule):
            raise ValueError(f"think: the schedule needs at least one step, each a landscape in "
                             f"0..{self.landscapes - 1}; got {schedule}")
        best: ThinkResult | None = None
        with torch.no_grad():
            token_emb = self.tok_emb(inputs)
            kvs_by_landscape: dict[int, KeysValues] = {}
            proj = self.vocab_pad.columns(self.candidate_proj.weight)
        for _ in range(samples):
            y = self.vocab_pad.pad(self._initial_candidates(*inputs.shape, inputs))
            nll, energy = [], []
            for landscape in schedule:
                if landscape not in kvs_by_landscape:
                    with torch.no_grad():
                        kvs_by_landscape[landscape] = self.real_stream(token_emb, landscape)
                y, e_k = self._descend(y, kvs_by_landscape[landscape], proj, create_graph=False,
                                       sigma=langevin_sigma, alpha_factor=None)
                y = y.detach()
                energy.append(e_k.detach())
                nll.append(F.cross_entropy(at_least_fp32(y.transpose(1, 2)), targets, ignore_index=IGNORE_INDEX,
                                           reduction="none"))
            if final_energy:
                with torch.no_grad():
                    energy.append(self.embedded_energy(F.linear(torch.softmax(y, -1), proj),
                                                       kvs_by_landscape[schedule[-1]]))
            result = ThinkResult(torch.stack(nll), torch.stack(energy), self.vocab_pad.unpad(y))
            best = result if best is None else _keep_lower_energy(best, result)
        return best

    def token_nll(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Validation as the reference code validates: the validation schedule (base plus
        the most extra steps) with the trained Langevin noise, the trained alpha."""
        return self.think(inputs, targets, langevin_sigma=self.config.options.langevin_sigma,
                          final_energy=False).nll[-1]

    def process_state(self) -> dict[str, torch.Tensor]:
        if not self.config.options.replay_buffer_size:
            return {}
        # copies: on the CPU .cpu() would hand out the live buffers, which the next step changes
        return {"replay_inputs": self.replay_inputs.to("cpu", copy=True),
                "replay_targets": self.replay_targets.to("cpu", copy=True),
                "replay_logits": self.replay_logits.to("cpu", copy=True), "replay_count": torch.tensor(self.replay_count)}

    def load_process_state(self, state: dict[str, torch.Tensor]) -> None:
        if not state:
            return
        if "replay_logits" not in state:
            # A checkpoint of the earlier replay buffer stored candidates without their
            # sequences, so its records cannot continue their chains: start empty.
            warnings.warn("replay buffer: the checkpoint holds the earlier buffer format (candidates without "
                          "their sequences); the buffer starts empty", RuntimeWarning, stacklevel=2)
            self.replay_count = 0
            return
        self.replay_inputs.copy_(state["replay_inputs"])
        self.replay_targets.copy_(state["replay_targets"])
        self.replay_logits.copy_(state["replay_logits"])
        self.replay_count = int(state["replay_count"])

    def embedding_parameters(self) -> list[nn.Parameter]:
        tables = [self.tok_emb.weight, self.candidate_proj.weight]
        return tables + ([self.step_emb.weight] if self.step_emb is not None else [])

    def optimizer_groups(self, weight_decay: float, decay_norms_and_embeddings: bool = False,
                         lr_scale: float = 1.0) -> list[dict]:
        groups = super().optimizer_groups(weight_decay, decay_norms_and_embeddings, lr_scale)
        if self.alpha.requires_grad:
            e = self.config.options
            # floor_scale: the group's LR floor relative to the shared one (ALPHA_LR_FLOORS)
            groups.append({"params": [self.alpha], "weight_decay": 0.0, "name": "alpha",
                           "lr_scale": lr_scale * e.alpha_lr_multiplier,
                           "floor_scale": lr_scale * (e.alpha_lr_multiplier if e.alpha_lr_floor == "scaled" else 1.0)})
        return groups


def _keep_lower_energy(a: ThinkResult, b: ThinkResult) -> ThinkResult:
    """Per position, the candidate whose final energy is lower (best-of-N by energy)."""
    take_b = b.energy[-1] < a.energy[-1]  # (B, S)
    return ThinkResult(torch.where(take_b, b.nll, a.nll), torch.where(take_b, b.energy, a.energy),
                       torch.where(take_b[..., None], b.logits, a.logits))
