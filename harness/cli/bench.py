"""`ebt-scaling bench`: time training steps of both models on this device.

Prints, per model, the median step time, tokens/s, peak memory, FLOPs of one training step
counted by FlopCounterMode, the achieved FLOP rate and MFU: the columns of
docs/performance.md. The defaults are the anchors' settings (xxs, batch 32 x 256,
V = 50,277, K = 2, time_embed, 3 warm-up + 15 timed steps). ``--save [FILE]`` merges the
results into the throughput file `plan` and `status` read for GPU-hours (default: $EBT_SCALING_THROUGHPUT,
else ~/.cache/ebt-scaling/throughput.json; sweeps/throughput.py). ``--feed SPEC``
instead times a run spec's model fed from its data, with and without the prefetch thread
(docs/performance.md, "Feeding the GPU: prefetch"). The timing logic lives in
harness/benchmarks/steps.py.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ebt_scaling.harness.cli.flops import MODEL_FLAG_DEFAULTS, add_model_arguments, build_configs, model_flag_paths
from ebt_scaling.harness.contract.errors import ConfigError

# The model timing's defaults of the flags --feed refuses (the spec sets those): they default to
# None in the parser, so that --feed can tell a given one, and run() fills these in.
ANCHOR_DEFAULTS = {**MODEL_FLAG_DEFAULTS, "batch": 32, "precision": "fp32", "seed": 0}
# The other flags --feed refuses, as --help lists them after the model's (--size, the shape and
# --ARCH.FIELD flags of harness/cli/flops.py, --arch); all default to None.
FEED_REFUSES = ("batch", "precision", "matmul_precision", "compile", "peak_tflops", "seed", "save")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ebt_scaling.sweeps.throughput import ENV_VAR, default_throughput_path, display_path

    add_model_arguments(parser, "a named size of the paper (explicit shape flags override it); default xxs when "
                                "no shape flag is given")
    # The flags --feed refuses default to None, filled in by run(): --feed can then tell a given one.
    parser.set_defaults(vocab_size=None, context=None, arch=None)
    parser.add_argument("--batch", type=int, default=None, help="sequences per step (default: 32)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                        help="fp32, or bf16 autocast with fp32 weights (default: fp32)")
    parser.add_argument("--matmul-precision", choices=["highest", "high", "medium"], default=None,
                        help="torch.set_float32_matmul_precision for fp32 runs (the anchors use 'medium'; default: "
                             "torch's, 'highest')")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--iters", type=int, default=15, help="timed steps; the median is reported (default: 15)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile what training compiles (each architecture's hot path); default: on "
                             "CUDA, as training does, so that --save records what runs will reach")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto: cuda if "
                                                         "available, else cpu)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak TFLOP/s for MFU (default: dense bf16 peak of known GPUs; CPU: MFU n/a)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (torch.set_num_threads; default: torch's). On a shared machine "
                             "fewer threads than cores avoids oversubscription stalls")
    parser.add_argument("--seed", type=int, default=None, help="seed of weights and random tokens (default: 0)")
    parser.add_argument("--feed", metavar="SPEC", default=None,
                        help="instead: time the run spec's model fed from its data pipeline (a spec YAML or a run "
                             "directory): one batch built alone, a step fed synchronously and one fed by the "
                             "trainer's prefetch thread, in interleaved rounds; the spec sets model, batch, data and "
                             "precision; only --warmup, --iters, --device, --threads and --json apply with it")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--save", nargs="?", const="", default=None, metavar="FILE",
                        help="merge the results into the throughput file `plan` and `status` use for GPU-hours "
                             f"(default FILE: {display_path(default_throughput_path())}, set by ${ENV_VAR}); an "
                             "entry of the same architecture, shape, precision and device is replaced")


def run(args: argparse.Namespace) -> int:
    import torch

    from ebt_scaling.harness.contract.architecture import ARCHITECTURES
    from ebt_scaling.harness.benchmarks import steps

    for flag, value, low in (("--iters", args.iters, 1), ("--warmup", args.warmup, 0)):
        if value < low:
            raise ConfigError(f"{flag}: must be >= {low}, got {value}")
    if args.feed is not None:
        return _run_feed(args)
    for dest, value in (*ANCHOR_DEFAULTS.items(), ("arch", list(ARCHITECTURES.names()))):
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    if args.size is None and args.n_layers is None and args.d_model is None and args.n_heads is None:
        args.size = "xxs"
    if args.peak_tflops is not None and not (math.isfinite(args.peak_tflops) and args.peak_tflops > 0):
        raise ConfigError(f"--peak-tflops: must be a positive finite number, got {args.peak_tflops}")
    configs = build_configs(args)  # validates the shape; errors name the flag
    save_path = None
    if args.save is not None:
        from ebt_scaling.sweeps.throughput import default_throughput_path, load_throughput_file

        save_path = Path(args.save) if args.save else default_throughput_path()
        if save_path.is_dir():
            raise ConfigError(f"--save: {save_path} is a directory; give a file path")
        if save_path.exists():
            load_throughput_file(save_path)  # a file that is not one fails before the timing, not after
    device = _device_and_threads(args)
    if args.matmul_precision:
        torch.set_float32_matmul_precision(args.matmul_precision)
    c = next(iter(configs.values()))
    size_label = args.size or ""
    if args.n_layers or args.d_model or args.n_heads:
        size_label = f"{c.n_layers}L, {c.d_model}" + (f" ({args.size}-based)" if args.size else "")
    elif args.size:
        size_label = f"{args.size} ({c.n_layers}L, {c.d_model})"
    compile = args.compile if args.compile is not None else device.type == "cuda"
    results = []
    for config in configs.values():
        try:
            results.append(steps.bench_model(
                config, batch=args.batch, ctx=config.context, device=device, precision=args.precision,
                warmup=args.warmup, iters=args.iters, compile=compile, peak_tflops=args.peak_tflops,
                size_label=size_label, seed=args.seed))
        except steps.BenchError as exc:
            raise ConfigError(str(exc)) from None
        except torch.cuda.OutOfMemoryError:
            raise ConfigError(f"{config.architecture.label}: out of memory on {device} at batch {args.batch} x "
                              f"ctx {config.context}; lower --batch") from None
    if save_path is not None:
        steps.save_results(results, save_path)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        print(json.dumps({"settings": settings, "results": [r.as_dict() for r in results]}))
    else:
        print(steps.format_report(results))
    if save_path is not None:
        print(f"saved {len(results)} entries to {save_path} (`ebt-scaling plan` and `status` use them for GPU-hours)",
              file=sys.stderr)
    return 0


def _device_and_threads(args: argparse.Namespace):
    import torch

    from ebt_scaling.harness.training.trainer import resolve_device

    try:
        device = resolve_device(args.device)
    except (ConfigError, RuntimeError) as exc:
        raise ConfigError(f"--device: {str(exc).removeprefix('device: ')}") from None
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads: must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    return device


def _run_feed(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ebt_scaling.harness.contract.spec import load_spec
    from ebt_scaling.harness.benchmarks import steps

    ignored = _flags_feed_ignores(args)
    if ignored:
        raise ConfigError(f"--feed: the run spec sets the model, batch, precision, compilation and seed; "
                          f"drop {', '.join(ignored)}")
    path = Path(args.feed)
    spec = load_spec(path / "spec.yaml" if path.is_dir() else path)
    result = steps.bench_feed(spec, _device_and_threads(args), warmup=args.warmup, iters=args.iters)
    print(json.dumps(asdict(result)) if args.json else steps.format_feed_report(result))
    return 0


def _flags_feed_ignores(args: argparse.Namespace) -> list[str]:
    """The flags given that --feed would ignore, as --help lists them: every one it refuses
    defaults to None (add_arguments), so any other value was given."""
    from ebt_scaling.harness.contract.cli_flags import flag_name

    refused = ("size", *model_flag_paths(), "arch", *FEED_REFUSES)  # the paths include fields without a flag
    return [flag_name(dest) for dest in refused if getattr(args, dest, None) is not None]
