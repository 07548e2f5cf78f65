"""Timing of training steps (forward + backward + AdamW step) of either model on one device.

The figures mirror the throughput anchors (docs/performance.md): median step time over
the timed iterations, tokens per second, peak memory, FLOPs of one training step counted by
torch's FlopCounterMode (models/flops.py ``count_training_step_flops``), the achieved
FLOP rate and the model FLOP utilisation against a peak table.

Inputs are uniformly random tokens (one fixed batch), as in the anchors. On CUDA the
optimizer is AdamW(fused=True) and the device is synchronised before and after every
timed step; bf16 means autocast with the fp32 master weights kept.

``bench_feed`` times a run spec's steps fed from its own data pipeline instead, with and
without the trainer's prefetch thread (harness/data/prefetch.py).
"""
from __future__ import annotations

import dataclasses
import datetime
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

from ebt_scaling.harness.contract.architecture import baseline_name
from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.harness.contract.spec import TrainSpec
from ebt_scaling.harness.training.trainer import build_optimizer
from ebt_scaling.models.architectures import PAPER_SIZES, build_model
from ebt_scaling.models.base import autocast
from ebt_scaling.sweeps.throughput import save_entries

# Dense bf16 tensor-core peaks (FLOP/s) by substring of torch.cuda.get_device_name().
# MFU is always quoted against the dense bf16 peak, also for fp32 runs (the usual MFU
# convention; the anchors quote the same 989 TFLOP/s for H100).
PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
}


class BenchError(RuntimeError):
    """A setting this device cannot run (e.g. bf16 autocast unsupported)."""


@dataclass
class BenchResult:
    model: str
    arch: str
    size: str
    precision: str
    device: str
    device_name: str
    batch: int
    ctx: int
    vocab: int
    tokens_per_step: int
    warmup: int
    iters: int
    compiled: bool
    step_ms: float  # median of the timed iterations
    step_ms_min: float
    step_ms_max: float
    tokens_per_s: float
    peak_memory_bytes: int
    memory_kind: str  # "cuda max_memory_allocated" or "process peak RSS"
    flops_per_step: int
    achieved_flops_per_s: float
    peak_flops_per_s: float | None
    mfu: float | None
    params_total: int
    params_non_embedding: int
    matmul_precision: str = "highest"  # torch.get_float32_matmul_precision() during the run
    n_layers: int = 0
    d_model: int = 0
    n_heads: int = 0
    torch_version: str = ""
    date: str = ""  # ISO 8601 (UTC) when the timing ended
    options: dict = field(default_factory=dict)  # the architecture's options (model.options)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} torch threads"


def peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    """Peak FLOP/s used for MFU: --peak-tflops if given, else the table for known GPUs,
    else None (CPU and unknown GPUs report MFU as n/a)."""
    if override_tflops is not None:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_FLOPS.items():
        if key in name:
            return value
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def bench_model(config: ModelConfig, *, batch: int, ctx: int, device: torch.device, precision: str = "fp32",
                warmup: int = 3, iters: int = 15, compile: bool = False, peak_tflops: float | None = None,
                size_label: str = "", seed: int = 0) -> BenchResult:
    """Time `iters` training steps of the model `config` describes after `warmup` untimed ones."""
    from ebt_scaling.models.flops import count_training_step_flops

    if iters < 1 or warmup < 0:
        raise BenchError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    notes: list[str] = []
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randint(0, config.vocab_size, (batch, ctx), generator=generator).to(device)
    targets = torch.randint(0, config.vocab_size, (batch, ctx), generator=generator).to(device)

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = build_model(config).to(device)
    model.train()
    optimizer = build_optimizer(model, TrainSpec(lr=1e-4), device)  # the LR does not change the timing
    try:
        amp = autocast(device, precision)
    except ValueError as exc:
        raise BenchError(str(exc)) from None

    # Counted FLOPs of one full training step, on the eager model (FlopCounterMode does not
    # see inside compiled graphs). It accumulates gradients: drop them afterwards.
    try:
        with amp():
            flops = count_training_step_flops(model, inputs, targets)
    except RuntimeError as exc:
        if precision == "bf16":
            raise BenchError(f"bf16 autocast does not run on {device.type} for {config.architecture.label}: "
                             f"{str(exc).splitlines()[0]}") from None
        raise
    optimizer.zero_grad(set_to_none=True)

    # --compile compiles what training compiles (the architecture's compile_hot_path), so the
    # figure is the one a run gets.
    compiled = compile and config.architecture.compiles
    if compile and not compiled:
        notes.append(f"{config.architecture.label} does not compile (its registry entry): ran eager")
    if compiled:
        model.compile_hot_path()

    def train_step():
        with amp():
            model.step(inputs, targets).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if compiled:  # compile now, so that a failure is one clear line
        try:
            train_step()
        except Exception as exc:  # noqa: BLE001 - compile failures come in many types
            raise BenchError(f"torch.compile failed for {config.architecture.label}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]}; rerun with --no-compile") from None
    for _ in range(warmup):
        train_step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # the steady state, after warm-up
    times = []
    for _ in range(iters):
        _sync(device)
        start = time.perf_counter()
        train_step()
        _sync(device)
        times.append(time.perf_counter() - start)

    if device.type == "cuda":
        peak_mem, memory_kind = int(torch.cuda.max_memory_allocated(device)), "cuda max_memory_allocated"
    else:
        peak_mem, memory_kind = _peak_rss_bytes(), "process peak RSS"
    step_s = statistics.median(times)
    tokens = batch * ctx
    achieved = flops / step_s
    peak = peak_flops(device, peak_tflops)
    counts = model.param_counts()
    result = BenchResult(
        model=config.architecture.label, arch=config.arch, size=size_label, precision=precision,
        device=str(device), device_name=device_name(device), batch=batch, ctx=ctx, vocab=config.vocab_size,
        tokens_per_step=tokens, warmup=warmup, iters=iters, compiled=compiled,
        step_ms=step_s * 1e3, step_ms_min=min(times) * 1e3, step_ms_max=max(times) * 1e3,
        tokens_per_s=tokens / step_s, peak_memory_bytes=peak_mem, memory_kind=memory_kind,
        flops_per_step=int(flops), achieved_flops_per_s=achieved, peak_flops_per_s=peak,
        mfu=None if peak is None else achieved / peak,
        params_total=counts["total"], params_non_embedding=counts["non_embedding"],
        matmul_precision=torch.get_float32_matmul_precision(),
        n_layers=config.n_layers, d_model=config.d_model, n_heads=config.n_heads, torch_version=torch.__version__,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        options=dataclasses.asdict(config.options), notes=notes)
    model = optimizer = None  # drop them (train_step's references too) before emptying the cache
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ------------------------------------------------------------------ feeding from the data pipeline
FEED_ROUNDS = 3  # rounds of (batch build, synchronous, prefetched), interleaved so load drift hits all three


@dataclass
class FeedResult:
    """Per-round mean times (ms) of: building one batch alone, a step fed synchronously, a
    step fed through the prefetch thread (a step: next batch, copy to the device, forward,
    backward, AdamW; the whole local batch at once). Means, not medians: a stream
    tokenises ENCODE_CHUNK documents at once, a rare long step that throughput pays for."""
    model: str
    source: str  # data.source and batching
    device: str
    device_name: str
    batch: int
    ctx: int
    warmup: int
    iters: int
    build_ms: list[float]
    sync_ms: list[float]
    prefetch_ms: list[float]


def bench_feed(spec, device: torch.device, warmup: int = 3, iters: int = 15) -> FeedResult:
    """Time `spec`'s model fed from `spec`'s data, with and without the prefetch thread the
    trainer uses on CUDA (timed here on any device)."""
    from ebt_scaling.harness.data.pipeline import open_dataset
    from ebt_scaling.harness.data.prefetch import DEPTH, PrefetchedBatches

    data = open_dataset(spec)
    torch.manual_seed(spec.seed)
    model = build_model(spec.model).to(device)
    model.train()
    optimizer = build_optimizer(model, spec.train, device)
    amp = autocast(device, spec.precision)
    if spec.model.architecture.compiles and (spec.compile if spec.compile is not None else device.type == "cuda"):
        model.compile_hot_path()  # as the trainer decides

    def step(batches) -> None:
        batch = next(batches)
        inputs, targets = batch.inputs.to(device, non_blocking=True), batch.targets.to(device, non_blocking=True)
        with amp():
            model.step(inputs, targets).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)  # the trainer waits for each step's metrics: the next batch cannot hide behind it

    def mean_ms(run, batches) -> float:
        for _ in range(warmup):
            run(batches)
        _sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            run(batches)
        _sync(device)
        return (time.perf_counter() - start) / iters * 1e3

    def fed_by_thread() -> float:
        batches = PrefetchedBatches(data.train_batches(), DEPTH, device if device.type == "cuda" else None)
        try:
            return mean_ms(step, batches)
        finally:
            batches.close()

    build, sync, ahead = [], [], []
    feeds = [(sync, lambda: mean_ms(step, data.train_batches())), (ahead, fed_by_thread)]
    for r in range(FEED_ROUNDS):  # each timing starts at the first batch: all see the same data
        build.append(mean_ms(next, data.train_batches()))
        for times, feed in feeds if r % 2 == 0 else feeds[::-1]:  # alternating: a drifting load favours neither
            times.append(feed())
    return FeedResult(model=spec.model.architecture.label, source=f"{spec.data.source}, {spec.data.batching}",
                      device=str(device), device_name=device_name(device), batch=spec.train.batch_size,
                      ctx=spec.model.context, warmup=warmup, iters=iters, build_ms=build, sync_ms=sync,
                      prefetch_ms=ahead)


def format_feed_report(r: FeedResult) -> str:
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    sync, ahead = statistics.median(r.sync_ms), statistics.median(r.prefetch_ms)
    return "\n".join([
        f"device: {r.device} ({r.device_name}), torch {torch.__version__}",
        f"{r.model}, batch {r.batch} x ctx {r.ctx}, data {r.source}; mean of {r.iters} timed steps after "
        f"{r.warmup} warm-up, per round; {len(r.sync_ms)} interleaved rounds: median (min-max) of the round means",
        "",
        "| what | ms |",
        "|---|---|",
        f"| build one batch (data alone) | {cell(r.build_ms)} |",
        f"| step fed synchronously | {cell(r.sync_ms)} |",
        f"| step fed by the prefetch thread | {cell(r.prefetch_ms)} |",
        "",
        f"data share of the synchronous step: {100 * statistics.median(r.build_ms) / sync:.1f}%; "
        f"prefetched / synchronous step time: {ahead / sync:.3f}",
    ])


# ------------------------------------------------------------------ the throughput file
def throughput_entry(r: BenchResult) -> dict:
    """One entry of the throughput file (sweeps/throughput.py) from a result. Its
    size is the ladder name when the shape is a named size's, else L<layers>-d<d_model>."""
    size = f"L{r.n_layers}-d{r.d_model}"
    for name, s in PAPER_SIZES.items():
        if (s.n_layers, s.d_model, s.n_heads) == (r.n_layers, r.d_model, r.n_heads):
            size = name
    return {"arch": r.arch, "label": r.model, "size": size,
            "shape": {"n_layers": r.n_layers, "d_model": r.d_model, "n_heads": r.n_heads, "vocab": r.vocab,
                      "ctx": r.ctx, "batch": r.batch},
            "precision": r.precision, "matmul_precision": r.matmul_precision, "compiled": r.compiled,
            "device": r.device_name, "device_type": r.device.split(":")[0], "torch_version": r.torch_version,
            "date": r.date, "step_ms": r.step_ms, "tokens_per_s": r.tokens_per_s, "flops_per_step": r.flops_per_step,
            "achieved_flops_per_s": r.achieved_flops_per_s, "mfu": r.mfu, "peak_flops_per_s": r.peak_flops_per_s,
            "params_non_embedding": r.params_non_embedding, "options": dict(r.options)}


def save_results(results: list[BenchResult], path) -> None:
    """Merge the results into the throughput file at `path`, atomically (same architecture,
    shape, precision and device: replaced). ConfigError naming the file when it is not one."""
    save_entries(path, [throughput_entry(r) for r in results])


# ------------------------------------------------------------------ presentation
COLUMNS = ("model", "size", "precision", "step (ms)", "tokens/s", "peak memory (GiB)", "counted TFLOP / step",
           "achieved TFLOP/s", "MFU")


def _sig(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}"


def table_row(r: BenchResult) -> list[str]:
    precision = r.precision + (" autocast" if r.precision == "bf16" else "")
    if r.precision == "fp32" and r.device.startswith("cuda"):
        precision += f" + matmul {r.matmul_precision!r}"
    if r.compiled:
        precision += ", compiled"
    return [r.model, r.size, precision, f"{r.step_ms:.1f}", f"{r.tokens_per_s:,.0f}",
            f"{r.peak_memory_bytes / 2**30:.2f}", _sig(r.flops_per_step / 1e12), _sig(r.achieved_flops_per_s / 1e12),
            "n/a" if r.mfu is None else f"{100 * r.mfu:.1f}%"]


def format_report(results: list[BenchResult]) -> str:
    if not results:
        return "(no results)"
    first = results[0]
    lines = [f"device: {first.device} ({first.device_name}), torch {torch.__version__}",
             f"batch {first.batch} x ctx {first.ctx} = {first.tokens_per_step:,} tokens/step, vocab {first.vocab:,}; "
             f"random tokens; median of {first.iters} timed steps after {first.warmup} warm-up "
             f"(each: forward + backward + AdamW{' fused' if first.device.startswith('cuda') else ''} step)"]
    for r in results:
        if r.options:
            lines.append(f"{r.model}: " + ", ".join(f"{k}={v}" for k, v in r.options.items()))
    lines.append("")
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    for r in results:
        lines.append("| " + " | ".join(table_row(r)) + " |")
    lines.append("")
    lines.append(f"peak memory: {first.memory_kind}" + (
        " (cumulative over this process: a later row includes every earlier model's peak)"
        if first.memory_kind == "process peak RSS" else " after warm-up"))
    lines.append("counted FLOPs: one training step under FlopCounterMode (forward, backward and, for EBT, the "
                 "double backward; vocabulary-sized matmuls included)")
    if first.peak_flops_per_s is None:
        lines.append("MFU: n/a (no peak known for this device; pass --peak-tflops)")
    else:
        lines.append(f"MFU: achieved / {first.peak_flops_per_s / 1e12:g} TFLOP/s (dense bf16 peak)")
    lines.append("step time spread (min-max over the timed steps): " + ", ".join(
        f"{r.model} {r.step_ms_min:.1f}-{r.step_ms_max:.1f} ms" for r in results))
    base = next((r for r in results if r.arch == baseline_name()), None)
    for r in results:
        if base is not None and r is not base:
            lines.append(f"{r.model} / {base.model}: step time {r.step_ms / base.step_ms:.2f}x, counted FLOPs "
                         f"{r.flops_per_step / base.flops_per_step:.2f}x")
    for r in results:
        for note in r.notes:
            lines.append(f"note ({r.model}): {note}")
    return "\n".join(lines)
