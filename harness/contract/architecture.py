"""What the harness needs to know of a model architecture, and the registry of them.

One ``Architecture`` per model family. Sweeps, training, evaluation, benchmarks and the
analysis ask ``ARCHITECTURES.get(config.arch)`` for what differs between families and
never branch on the name. The built-ins (Transformer++ and EBT) live in
models/architectures.py and are found through the ``ebt_scaling.architectures`` entry
point; a test or a user's package can register a third one.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .registry import Registry

if TYPE_CHECKING:  # the contract never imports the model layer at run time
    from .model_config import ModelConfig

# FLOP conventions every architecture provides (see docs/flops.md):
#   paper: the EBT paper's approximations (6N per token for a Transformer, 20·K·N for EBT)
#   full:  every matmul the training step executes, as torch's FlopCounterMode counts them
FLOP_CONVENTIONS = ("paper", "full")

StepFlops = Callable[["ModelConfig", int, int], float]  # (config, batch, seq) -> FLOPs of one training step


@dataclass(frozen=True)
class Thinking:
    """How a model that refines its prediction thinks at inference. The model implements
    ``think(inputs, targets, schedule, samples, langevin_sigma)``, ``validation_schedule()``
    (the landscape of each step it validates with) and ``thinking_schedule(protocol, n)``
    (models/ebt.py); its options say its trained Langevin noise."""

    langevin_sigma: Callable[[Any], float]  # options -> trained noise std (0: none)


@dataclass(frozen=True)
class Architecture:
    name: str  # the run spec's model.arch
    label: str  # for tables, plots and reports
    options: type  # frozen dataclass of model.options; validates itself in __post_init__
    build: Callable[["ModelConfig"], Any]  # -> a LanguageModel (models/base.py)
    param_counts: Callable[["ModelConfig"], dict[str, int]]  # {"total", "non_embedding"}, analytic
    step_flops: Mapping[str, StepFlops]  # one function per FLOP convention
    compiles: bool = False  # torch.compile can compile its training step
    baseline: bool = False  # the default reference of sweeps and comparisons
    # Inference-time refinement ("thinking"); None for a model that predicts in one pass
    # (evaluation gives it a flat reference curve).
    thinking: Thinking | None = None
    # Model FLOP utilisation `plan` and `status` assume for GPU-hours when no measured figure
    # of this architecture is at hand (sweeps/throughput.py); state its provenance
    # where it is set. None: GENERIC_DEFAULT_MFU there.
    default_mfu: float | None = None
    # The reference code's value of each option it sets otherwise than this project's default
    # ({option: value}): ``protocol: reference`` fills them (protocol.py, docs/ebt.md).
    reference_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default_mfu is not None and not 0 < self.default_mfu <= 1:
            raise ValueError(f"architecture {self.name!r}: default_mfu must be in (0, 1], got {self.default_mfu}")
        missing = [c for c in FLOP_CONVENTIONS if c not in self.step_flops]
        if missing:
            raise ValueError(f"architecture {self.name!r}: step_flops lacks the convention(s) {missing}; "
                             f"give one function per convention in {FLOP_CONVENTIONS}")
        # Model configs are hashed (caches, run ids): their options must be immutable.
        params = getattr(self.options, "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise ValueError(f"architecture {self.name!r}: options must be a frozen dataclass "
                             f"(@dataclass(frozen=True)), got {self.options!r}")
        unknown = sorted(set(self.reference_options) - {f.name for f in fields(self.options)})
        if unknown:
            raise ValueError(f"architecture {self.name!r}: reference_options names {unknown}, which "
                             f"{self.options.__name__} has no field of; name fields of the options")

    @property
    def thinks(self) -> bool:
        return self.thinking is not None


ARCHITECTURES: Registry[Architecture] = Registry("architecture", "ebt_scaling.architectures")


def baseline_name() -> str:
    """The registered baseline architecture (the first one marked so, else the first)."""
    entries = ARCHITECTURES.entries()
    if not entries:
        ARCHITECTURES.get("transformer")  # raises the one-line "reinstall" error
    return next((a.name for a in entries if a.baseline), entries[0].name)
