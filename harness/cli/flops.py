"""`ebt-scaling flops`: parameter counts and training FLOPs per token of every architecture.

Analytic figures come from each registered architecture's FLOP functions, in every
convention; --measure also runs one real training step of each model on this machine
under torch's FlopCounterMode and prints the counted FLOPs per token beside them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json

from ebt_scaling.harness.contract.architecture import ARCHITECTURES, FLOP_CONVENTIONS, baseline_name
from ebt_scaling.harness.contract.cli_flags import add_dataclass_flags, flag_error, given_flags, nested
from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.formatting import si
from ebt_scaling.harness.contract.model_config import ModelConfig

# Shorter spellings that earlier command lines (and the README's figures) use.
SHAPE_ALIASES = {"n_layers": ["--layers"], "n_heads": ["--heads"], "vocab_size": ["--vocab"], "context": ["--ctx"]}


# GPT-NeoX-20B's vocabulary and the paper's context: what the model flags default to.
MODEL_FLAG_DEFAULTS = {"vocab_size": "50277", "context": "256"}


def add_model_arguments(parser: argparse.ArgumentParser, size_help: str) -> None:
    """Shape, vocabulary and context flags (ModelConfig's fields) and every registered
    architecture's option flags (--ARCH.FIELD), shared by `flops` and `bench`."""
    from ebt_scaling.models.architectures import PAPER_SIZES

    shape = parser.add_argument_group("model shape (--size, or all of --n-layers/--d-model/--n-heads)")
    shape.add_argument("--size", choices=list(PAPER_SIZES), help=size_help)
    add_dataclass_flags(shape, ModelConfig, aliases=SHAPE_ALIASES, skip=("arch", "options"))
    parser.set_defaults(**MODEL_FLAG_DEFAULTS)
    for arch in ARCHITECTURES.entries():
        group = parser.add_argument_group(f"{arch.label} options")
        add_dataclass_flags(group, arch.options, prefix=f"{arch.name}.")
    parser.add_argument("--arch", nargs="+", choices=ARCHITECTURES.names(), default=list(ARCHITECTURES.names()),
                        help="architectures to report (default: every registered one)")


def model_flag_paths() -> list[str]:
    """The dotted paths of every model flag (shape fields, then each architecture's options)."""
    paths = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("arch", "options")]
    for arch in ARCHITECTURES.entries():
        paths += [f"{arch.name}.{f.name}" for f in dataclasses.fields(arch.options)]
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, "a named size of the paper: fills layers, heads, d_model (explicit flags override it)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--measure", action="store_true",
                        help="also count one real training step of each model with FlopCounterMode (CPU is fine; "
                             "large sizes with a big vocabulary take a while)")
    parser.add_argument("--batch", type=int, default=1, help="sequences in the --measure step (default: 1)")


def build_configs(args: argparse.Namespace) -> dict[str, ModelConfig]:
    """One ModelConfig per requested architecture, from the flags; ConfigError naming the flag."""
    from ebt_scaling.harness.contract.typed_config import from_dict
    from ebt_scaling.models.architectures import PAPER_SIZES

    paths = model_flag_paths()
    flags = nested(given_flags(args, paths))
    if args.size is not None:
        named = PAPER_SIZES[args.size]
        for key, value in (("n_layers", named.n_layers), ("n_heads", named.n_heads), ("d_model", named.d_model)):
            flags.setdefault(key, value)
    missing = [f"--{k.replace('_', '-')}" for k in ("n_layers", "d_model", "n_heads") if k not in flags]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: required unless --size is given")
    if args.batch < 1:
        raise ConfigError(f"--batch: must be a positive integer, got {args.batch}")
    shape = {k: v for k, v in flags.items() if k not in ARCHITECTURES.names()}
    configs = {}
    for name in args.arch:
        try:
            configs[name] = from_dict(ModelConfig, {**shape, "arch": name, "options": flags.get(name, {})})
        except ConfigError as exc:  # "options.x: ..." is the flag --NAME.x
            message = str(exc)
            if message.startswith("options."):
                message = name + message[len("options"):]
            raise flag_error(ConfigError(message), paths) from None
    return configs


def measure_flops_per_token(config: ModelConfig, batch: int, seq: int) -> float:
    """FLOPs per token that FlopCounterMode counts over one real training step."""
    import torch

    from ebt_scaling.models.architectures import build_model
    from ebt_scaling.models.flops import count_training_step_flops

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model(config)
    inputs = torch.randint(0, config.vocab_size, (batch, seq), generator=generator)
    targets = torch.randint(0, config.vocab_size, (batch, seq), generator=generator)
    return count_training_step_flops(model, inputs, targets) / (batch * seq)


def collect(args: argparse.Namespace) -> dict:
    from ebt_scaling.models.flops import flops_per_token, param_counts

    report = {}
    for name, config in build_configs(args).items():
        counts = param_counts(config)
        entry = {"params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
                 "flops_per_token": {c: flops_per_token(config, c) for c in FLOP_CONVENTIONS}}
        if args.measure:
            entry["measured_flops_per_token"] = measure_flops_per_token(config, args.batch, config.context)
        report[name] = entry
    return report


def format_table(args: argparse.Namespace, report: dict) -> str:
    configs = build_configs(args)
    c = next(iter(configs.values()))
    lines = [f"shape: layers={c.n_layers} heads={c.n_heads} d_model={c.d_model} ffn_hidden={c.hidden} "
             f"vocab={c.vocab_size} ctx={c.context}" + (f" (size {args.size})" if args.size else "")]
    for name, config in configs.items():
        options = ", ".join(f"{k}={v}" for k, v in vars(config.options).items())
        if options:
            lines.append(f"{ARCHITECTURES.get(name).label}: {options}")
    names = list(report)
    base = baseline_name() if baseline_name() in names else names[0]
    others = [n for n in names if n != base]
    rows = [("params total", "params_total", lambda v: f"{v:,}"),
            ("params non-embedding", "params_non_embedding", lambda v: f"{v:,}")]
    value = {n: {"params_total": report[n]["params_total"], "params_non_embedding": report[n]["params_non_embedding"],
                 **{f"FLOPs/token {k}": v for k, v in report[n]["flops_per_token"].items()},
                 **({"FLOPs/token measured": report[n]["measured_flops_per_token"]}
                    if "measured_flops_per_token" in report[n] else {})} for n in names}
    rows += [(key, key, lambda v: si(v, 4)) for key in value[base] if key.startswith("FLOPs")]
    labels = {n: ARCHITECTURES.get(n).label for n in names}
    headers = [labels[n] for n in names] + [f"{labels[n]}/{labels[base]}" for n in others]
    width = max(16, *(len(h) + 2 for h in headers))
    lines += ["", f"{'':<22}" + "".join(f"{h:>{width}}" for h in headers)]
    for title, key, show in rows:
        lines.append(f"{title:<22}" + "".join(f"{show(value[n][key]):>{width}}" for n in names)
                     + "".join(f"{value[n][key] / value[base][key]:>{width}.3f}" for n in others))
    if args.measure:
        ratios = ", ".join(f"{labels[n]} {report[n]['measured_flops_per_token'] / report[n]['flops_per_token']['full']:.4f}"
                           for n in names)
        lines += ["", f"measured: one training step of {args.batch} x {c.context} tokens under FlopCounterMode "
                      f"(SDPA math backend); measured/full: {ratios}"]
    lines.append("paper: T++ 6N, EBT 20KN per token (N = non-embedding params); full: every matmul of forward, "
                 "backward and EBT's double backward, vocabulary-sized ones and attention included")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = collect(args)
    print(json.dumps(report) if args.json else format_table(args, report))
    return 0
