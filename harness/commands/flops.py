"""`ebt-scaling flops`: parameter counts and training FLOPs per token of both models.

Analytic figures come from models/flops.py in every convention; --measure also runs one
real training step of each model on this machine under torch's FlopCounterMode and
prints the counted FLOPs per token beside them.
"""
from __future__ import annotations

import argparse
import json

from ebt_scaling.harness.cli import CliError

ARCHS = ("transformer", "ebt")
ARCH_LABELS = {"transformer": "Transformer++", "ebt": "EBT"}

# Config field -> the flag that sets it, so config errors name what the user typed.
FIELD_FLAGS = {
    "n_layers": "--layers",
    "d_model": "--d-model",
    "n_heads": "--heads",
    "vocab_size": "--vocab",
    "context": "--ctx",
    "ffn_hidden": "--ffn-hidden",
    "steps": "--steps",  # EBTConfig (named "ebt.steps" when nested)
    "variant": "--variant",
}


def add_model_arguments(parser: argparse.ArgumentParser, size_help: str) -> None:
    """Shape, vocabulary, context and EBT flags shared by `flops` and `bench`
    (build_configs turns them into ModelConfigs)."""
    from ebt_scaling.models.sizes import PAPER_SIZES

    shape = parser.add_argument_group("model shape (--size, or all of --layers/--d-model/--heads)")
    shape.add_argument("--size", choices=list(PAPER_SIZES), help=size_help)
    shape.add_argument("--layers", type=int, help="number of blocks")
    shape.add_argument("--d-model", type=int, help="model width")
    shape.add_argument("--heads", type=int, help="attention heads (must divide --d-model)")
    shape.add_argument("--ffn-hidden", type=int, help="SwiGLU hidden width (default: d_model, as in the paper)")
    parser.add_argument("--vocab", type=int, default=50277, help="vocabulary size (default: 50277, GPT-NeoX-20B)")
    parser.add_argument("--ctx", type=int, default=256, help="sequence length in tokens (default: 256)")
    parser.add_argument("--steps", type=int, default=2, help="EBT refinement steps K (default: 2)")
    parser.add_argument("--variant", choices=["time_embed", "default"], default="time_embed",
                        help="EBT variant (default: time_embed, the paper's S1)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, "a named size of the paper: fills layers, heads, d_model (explicit flags override it)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--measure", action="store_true",
                        help="also count one real training step of each model with FlopCounterMode (CPU is fine; "
                             "large sizes with a big vocabulary take a while)")
    parser.add_argument("--batch", type=int, default=1, help="sequences in the --measure step (default: 1)")


def _flag_message(message: str) -> str:
    """ConfigError text with field names replaced by flags: 'd_model: must be a multiple of
    n_heads (6) ...' -> '--d-model: must be a multiple of --heads (6) ...'."""
    field_name, sep, rest = message.partition(": ")
    field_name = field_name.removeprefix("ebt.")
    if not sep or field_name not in FIELD_FLAGS:
        return message
    for name in ("n_layers", "d_model", "n_heads", "vocab_size", "ffn_hidden"):  # unambiguous in prose
        rest = rest.replace(name, FIELD_FLAGS[name])
    return f"{FIELD_FLAGS[field_name]}: {rest}"


def build_configs(args: argparse.Namespace):
    """The two ModelConfigs the flags describe; CliError (naming the flag) if invalid."""
    from ebt_scaling.models.config import ConfigError, EBTConfig, ModelConfig
    from ebt_scaling.models.sizes import PAPER_SIZES

    layers, heads, d_model = args.layers, args.heads, args.d_model
    if args.size is not None:
        named = PAPER_SIZES[args.size]
        layers = named.n_layers if layers is None else layers
        heads = named.n_heads if heads is None else heads
        d_model = named.d_model if d_model is None else d_model
    missing = [flag for flag, value in (("--layers", layers), ("--d-model", d_model), ("--heads", heads))
               if value is None]
    if missing:
        raise CliError(f"{', '.join(missing)} required unless --size is given")
    if args.batch < 1:
        raise CliError(f"--batch: must be a positive integer, got {args.batch}")
    try:
        ebt = EBTConfig(variant=args.variant, steps=args.steps)
        shape = dict(n_layers=layers, d_model=d_model, n_heads=heads, vocab_size=args.vocab, context=args.ctx,
                     ffn_hidden=args.ffn_hidden, ebt=ebt)
        return {arch: ModelConfig(arch=arch, **shape) for arch in ARCHS}
    except ConfigError as exc:
        raise CliError(_flag_message(str(exc))) from None


def measure_flops_per_token(config, batch: int, seq: int) -> float:
    """FLOPs per token that FlopCounterMode counts over one real training step."""
    import torch

    from ebt_scaling.models.factory import build_model
    from ebt_scaling.models.flops import count_training_step_flops

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model(config)
    inputs = torch.randint(0, config.vocab_size, (batch, seq), generator=generator)
    targets = torch.randint(0, config.vocab_size, (batch, seq), generator=generator)
    return count_training_step_flops(model, inputs, targets) / (batch * seq)


def collect(args: argparse.Namespace) -> dict:
    from ebt_scaling.models.flops import CONVENTIONS, flops_per_token, param_counts

    configs = build_configs(args)
    report = {}
    for arch, config in configs.items():
        counts = param_counts(config)
        entry = {"params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
                 "flops_per_token": {c: flops_per_token(config, c, args.ctx) for c in CONVENTIONS}}
        if args.measure:
            entry["measured_flops_per_token"] = measure_flops_per_token(config, args.batch, args.ctx)
        report[arch] = entry
    return report


def _si(value: float) -> str:
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.4g}{suffix}"
    return f"{value:.4g}"


def format_table(args: argparse.Namespace, report: dict) -> str:
    configs = build_configs(args)
    c = configs["ebt"]
    lines = [f"shape: layers={c.n_layers} heads={c.n_heads} d_model={c.d_model} ffn_hidden={c.hidden} "
             f"vocab={c.vocab_size} ctx={args.ctx}" + (f" (size {args.size})" if args.size else ""),
             f"EBT: variant={c.ebt.variant} steps={c.ebt.steps}", ""]
    t, e = report["transformer"], report["ebt"]
    rows = [("params total", t["params_total"], e["params_total"], "{:,}"),
            ("params non-embedding", t["params_non_embedding"], e["params_non_embedding"], "{:,}")]
    for convention in t["flops_per_token"]:
        rows.append((f"FLOPs/token {convention}", t["flops_per_token"][convention],
                     e["flops_per_token"][convention], None))
    if "measured_flops_per_token" in t:
        rows.append(("FLOPs/token measured", t["measured_flops_per_token"], e["measured_flops_per_token"], None))
    header = f"{'':<22}{ARCH_LABELS['transformer']:>16}{ARCH_LABELS['ebt']:>16}{'EBT/T++':>10}"
    lines.append(header)
    for label, tv, ev, fmt in rows:
        show = (lambda v: fmt.format(v)) if fmt else _si
        lines.append(f"{label:<22}{show(tv):>16}{show(ev):>16}{ev / tv:>10.3f}")
    if "measured_flops_per_token" in t:
        batch = args.batch
        lines.append("")
        lines.append(f"measured: one training step of {batch} x {args.ctx} tokens under FlopCounterMode (SDPA math "
                     f"backend); measured/full: T++ "
                     f"{t['measured_flops_per_token'] / t['flops_per_token']['full']:.4f}, EBT "
                     f"{e['measured_flops_per_token'] / e['flops_per_token']['full']:.4f}")
    lines.append("paper: T++ 6N, EBT 20KN per token (N = non-embedding params); full: every matmul of forward, "
                 "backward and EBT's double backward, vocabulary-sized ones and attention included")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = collect(args)
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(args, report))
    return 0
