"""The model part of a run spec: backbone shape (shared by every architecture, so a pair of
runs differs only in the family) plus the family's own options.

``options`` is a dataclass whose type the architecture registry names (EBT: refinement
steps, alpha, System 2 flags; Transformer++: none). Every invalid value raises
ConfigError naming the key and the fix.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

from .architecture import ARCHITECTURES, Architecture
from .errors import require
from .typed_config import from_dict, since

# Every vocabulary-sized matmul runs at the vocabulary rounded up to this multiple. A GEMM
# whose row stride is not a multiple of 8 elements (16 bytes of bf16) cannot use the
# tensor-core kernels and falls back to much slower ones: 50,277 (GPT-NeoX) is such a
# width. 64 also matches the kernels' tile widths. The extra columns are masked logits, so
# no result changes (docs/performance.md).
VOCAB_MULTIPLE = 64

# How a model's weights start and which RMSNorm eps it uses (docs/ebt.md has the per-parameter
# table). "project": N(0, init_std), residual outputs scaled by 1/sqrt(2 n_layers), eps 1e-6;
# "reference": the paper's reference code, Xavier-normal matrices, N(0, 1) tables, eps 1e-5.
INIT_SCHEMES = ("project", "reference")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "transformer"  # a registered architecture (ebt-scaling flops lists them)
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 2
    vocab_size: int = 2048
    context: int = 256
    ffn_hidden: int | None = None  # None = d_model, as in the paper's reference code
    rope_theta: float = 10_000.0
    init_std: float = 0.02  # init "project" only
    options: Any = None  # the architecture's options dataclass (a mapping is converted); None: its defaults
    init: Literal["project", "reference"] = since("project")  # weights and norm eps, see INIT_SCHEMES

    def __post_init__(self) -> None:
        architecture = ARCHITECTURES.get(self.arch, "arch")
        for name in ("n_layers", "d_model", "n_heads", "vocab_size", "context"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, name, f"must be a positive integer, got {value!r}")
        require(self.d_model % self.n_heads == 0, "d_model",
                f"must be a multiple of n_heads ({self.n_heads}), got {self.d_model}; pick d_model = n_heads * head_dim")
        require(self.head_dim % 2 == 0, "d_model", f"d_model / n_heads must be even for RoPE, got head_dim {self.head_dim}")
        require(self.vocab_size >= 2, "vocab_size", f"must be >= 2, got {self.vocab_size}")
        require(self.ffn_hidden is None or (isinstance(self.ffn_hidden, int) and self.ffn_hidden >= 1),
                "ffn_hidden", f"must be a positive integer or null (= d_model), got {self.ffn_hidden!r}")
        require(self.rope_theta > 0, "rope_theta", f"must be > 0, got {self.rope_theta}")
        require(self.init_std > 0, "init_std", f"must be > 0, got {self.init_std}")
        require(self.init in INIT_SCHEMES, "init", f"must be one of {INIT_SCHEMES}, got {self.init!r}")
        require(self.init == "project" or self.init_std == ModelConfig.init_std, "init_std",
                f"is not used by init 'reference' (Xavier / N(0, 1)), got {self.init_std}; drop it or set init: project")
        # kept: the options' type depends on arch, and a direct ModelConfig(options=None or a dict) must hold them typed
        object.__setattr__(self, "options", self._typed_options(architecture))

    def _typed_options(self, architecture: Architecture) -> Any:
        options = self.options
        if options is None:
            return architecture.options()
        if isinstance(options, dict):
            return from_dict(architecture.options, options, "options")
        require(isinstance(options, architecture.options), "options",
                f"must be {architecture.options.__name__} for arch {self.arch!r}, got {type(options).__name__}")
        return options

    @classmethod
    def prepare_input(cls, data: dict, path: str) -> dict:
        """Specs written before options were per architecture held EBT options under
        ``ebt`` (every architecture carried them). Read them as ``options`` of an EBT and
        drop them elsewhere; the run id of such a spec changes once (README)."""
        if "ebt" not in data:
            return data
        data = dict(data)
        legacy = data.pop("ebt")
        where = f"{path}.ebt" if path else "ebt"
        if data.get("arch", cls.arch) == "ebt" and "options" not in data:
            data["options"] = legacy
        warnings.warn(f"{where}: deprecated key; EBT options now live under model.options "
                      "(the run id of a rewritten spec differs from the old one)", FutureWarning, stacklevel=2)
        return data

    @property
    def architecture(self) -> Architecture:
        return ARCHITECTURES.get(self.arch, "arch")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def hidden(self) -> int:
        return self.ffn_hidden or self.d_model

    @property
    def padded_vocab_size(self) -> int:
        """The width of every vocabulary-sized matmul (see VOCAB_MULTIPLE)."""
        return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
