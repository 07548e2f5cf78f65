"""Acceptance checks of one device in one call (`ebt-scaling selftest`, docs/performance.md).

``run_selftest(settings)`` runs four groups of checks over every registered architecture
and returns one ``Row`` per check (PASS / FAIL / SKIP, its figures, its seconds):

* ``train``: a few training steps of each architecture (build_model, the trainer's
  build_optimizer, autocast), eager and after ``model.compile_hot_path()``; every loss
  finite, and the compiled loss of step 1 equal to the eager one within a tolerance
  (same seed, same batches; inductor's ``fallback_random`` so that random draws inside a
  compiled graph are eager's draws).
* ``resume``: a tiny eager ``train_run`` on synthetic tokens, stopped after a few steps through
  its ``stop_requested`` hook, then resumed, against an uninterrupted run: metrics rows,
  weights and optimizer state bit for bit.
* ``data-parallel``: a process group of world size 1 (NCCL on CUDA, gloo on the CPU) on a
  free localhost port; a few steps whose gradients go through ``DistributedContext``'s
  collectives, compared with the same steps without a group; the group is destroyed.
* ``bench``: ``bench_model`` of each architecture, eager and compiled, beside the
  reference code's H100 figures (REFERENCE) where the shape is a reference shape.

A check that raises is reported FAIL with the exception's first line; the others still
run. On CUDA, a comparison that is not bit-exact is re-judged against the device's own
run-to-run spread (see ``_judge``), because some CUDA kernels (atomics in attention and
embedding backward passes) are not deterministic.
"""
from __future__ import annotations

import dataclasses
import datetime
import gc
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ebt_scaling.harness.contract.architecture import ARCHITECTURES, Architecture
from ebt_scaling.harness.contract.errors import describe_error
from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import RunSpec, TrainSpec, spec_from_dict
from ebt_scaling.harness.training.distributed import DistributedContext
from ebt_scaling.harness.training.trainer import build_optimizer, train_run
from ebt_scaling.models.architectures import PAPER_SIZES, build_model
from ebt_scaling.models.base import autocast

from .steps import BenchError, bench_model, device_name

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
GROUPS = ("train", "resume", "data-parallel", "bench")
CUDA_BUDGET_S = 300.0  # the whole default run on one H100, compilation included

# The reference code on one H100 80GB, bf16 autocast, batch 32 x 256, V = 50,277
# (docs/performance.md): (arch, size) -> (ms per step, peak GiB).
REFERENCE: dict[tuple[str, str], tuple[float, float]] = {
    ("transformer", "xxs"): (28.6, 6.4),
    ("ebt", "xxs"): (231.5, 30.6),
    ("transformer", "small"): (62.8, 11.0),
    ("ebt", "small"): (628.0, 66.1),
}
REFERENCE_BATCH, REFERENCE_CTX, REFERENCE_VOCAB = 32, 256, 50_277

# Step-1 loss, compiled vs eager, relative: bf16 keeps 8 significant bits (2^-7 = 0.8%),
# and a compiled graph fuses and reorders bf16 operations, so a few roundings differ.
COMPILE_RTOL = {"bf16": 2e-2, "fp32": 1e-4}
# Losses of a resumed (or data-parallel) run on CUDA when even two identical runs differ:
# nondeterministic kernels leave differences of about 1e-6; a real resume bug (optimizer
# state, RNG, data position) moves the loss by far more than this.
NONDETERMINISM_RTOL = 1e-3


# ------------------------------------------------------------------ settings
@dataclass(frozen=True)
class Shape:
    n_layers: int
    d_model: int
    n_heads: int
    vocab: int
    context: int
    batch: int
    label: str = ""

    def config(self, arch: str) -> ModelConfig:
        return ModelConfig(arch=arch, n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads,
                           vocab_size=self.vocab, context=self.context)

    def describe(self, label: bool = True) -> str:
        name = f"{self.label} " if self.label and label else ""
        return (f"{name}({self.n_layers}L, d {self.d_model}, V {self.vocab:,}, "
                f"batch {self.batch} x {self.context})")


@dataclass(frozen=True)
class BenchShape:
    shape: Shape
    size: str | None  # the named size whose REFERENCE figures apply (None: a stand-in shape)


@dataclass(frozen=True)
class Settings:
    device: torch.device
    precision: str = "bf16"
    groups: tuple[str, ...] = GROUPS
    seed: int = 0
    train_shape: Shape = Shape(1, 32, 2, 512, 32, 4)
    train_steps: int = 3
    lr: float = 1e-3
    resume_shape: Shape = Shape(1, 32, 2, 512, 32, 4)
    resume_steps: int = 8
    resume_stop: int = 4  # the stopped run checkpoints and returns after this many steps
    resume_checkpoint_every: int = 3  # a checkpoint before the stop, so the stop's own is not the only one
    dp_steps: int = 2
    bench: tuple[BenchShape, ...] = ()
    bench_warmup: int = 1
    bench_iters: int = 2
    # quick: eager only. The compiled bench compiles every architecture once more, the
    # slowest part of a CPU run; the train group's compiled rows already compile each.
    bench_compiled: bool = True
    quick: bool = False
    budget_s: float | None = None  # print a warning when the total exceeds it

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["device"] = str(self.device)
        return d


def named_shape(size: str, vocab: int, context: int, batch: int) -> Shape:
    s = PAPER_SIZES[size]
    return Shape(s.n_layers, s.d_model, s.n_heads, vocab, context, batch, size)


def default_settings(device: torch.device, *, quick: bool = False, precision: str = "bf16",
                     groups: tuple[str, ...] = GROUPS, bench_sizes: tuple[str, ...] | None = None,
                     seed: int = 0) -> Settings:
    """CUDA: the train and data-parallel checks at xxs (V = 50,277), bench at the anchors'
    settings (xxs, batch 32 x 256, 3 warm-up + 15 timed steps). CPU: small stand-in shapes.
    quick (any device): the smallest shapes and fewest steps, bench eager only (what the
    test suite runs). bench_sizes: named sizes to bench at the anchors' batch, context and vocabulary
    (default: xxs on CUDA unless quick; a stand-in shape otherwise)."""
    cuda = device.type == "cuda"
    if bench_sizes:
        bench = tuple(BenchShape(named_shape(s, REFERENCE_VOCAB, REFERENCE_CTX, REFERENCE_BATCH), s)
                      for s in bench_sizes)
    elif cuda and not quick:
        bench = (BenchShape(named_shape("xxs", REFERENCE_VOCAB, REFERENCE_CTX, REFERENCE_BATCH), "xxs"),)
    elif quick:
        bench = (BenchShape(Shape(1, 32, 2, 512, 32, 4, "stand-in"), None),)
    else:
        bench = (BenchShape(Shape(2, 64, 2, 1024, 64, 4, "stand-in"), None),)
    common = {"device": device, "precision": precision, "groups": groups, "seed": seed, "bench": bench,
              "quick": quick}
    if quick:
        return Settings(**common, bench_compiled=False)
    if cuda:
        return Settings(**common, train_shape=named_shape("xxs", REFERENCE_VOCAB, REFERENCE_CTX, 8),
                        resume_shape=Shape(2, 64, 2, 512, 64, 8), resume_steps=12, resume_stop=6,
                        resume_checkpoint_every=4, dp_steps=2, bench_warmup=3, bench_iters=15,
                        budget_s=CUDA_BUDGET_S)
    return Settings(**common, train_shape=Shape(2, 64, 2, 1024, 64, 4), resume_shape=Shape(2, 64, 2, 512, 64, 4),
                    resume_steps=12, resume_stop=6, resume_checkpoint_every=4, bench_warmup=2, bench_iters=5)


# ------------------------------------------------------------------ results
@dataclass
class Row:
    check: str
    status: str  # PASS, FAIL or SKIP
    figures: str
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Report:
    device: str
    device_name: str
    torch_version: str
    settings: dict
    rows: list[Row]
    total_s: float
    budget_s: float | None = None

    @property
    def failed(self) -> bool:
        return any(r.status == FAIL for r in self.rows)

    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def as_dict(self) -> dict:
        return {"device": self.device, "device_name": self.device_name, "torch": self.torch_version,
                "settings": self.settings, "checks": [r.as_dict() for r in self.rows],
                "total_s": self.total_s, "budget_s": self.budget_s, "ok": not self.failed}


class CheckFailed(Exception):
    """A check ran and its result is wrong (the message is the row's figures)."""


# A check: (name, function returning (status, figures, details) or raising).
CheckFn = Callable[[], "tuple[str, str, dict]"]


@dataclass
class Check:
    name: str
    fn: CheckFn


def run_checks(checks: list[Check], on_row: Callable[[Row], None] = lambda _: None,
               after: Callable[[], None] = lambda: None) -> list[Row]:
    """Run every check; an exception is that check's FAIL (its first line), never the end.
    `after` runs after each check (release device memory a failed check left behind)."""
    rows = []
    for check in checks:
        start = time.perf_counter()
        try:
            status, figures, details = check.fn()
        except CheckFailed as exc:
            status, figures, details = FAIL, str(exc), {}
        except Exception as exc:  # noqa: BLE001 - every failure of a check is a FAIL row
            status, figures, details = FAIL, describe_error(exc, limit=200), {}
        after()
        row = Row(check.name, status, figures, time.perf_counter() - start, details)
        rows.append(row)
        on_row(row)
    return rows


def run_selftest(settings: Settings, on_row: Callable[[Row], None] = lambda _: None) -> Report:
    start = time.perf_counter()
    checks = build_checks(settings)
    try:
        rows = run_checks(checks, on_row, after=lambda: _free_memory(settings.device))
    finally:
        _reset_compiler()
    return Report(str(settings.device), device_name(settings.device), torch.__version__, settings.as_dict(), rows,
                  time.perf_counter() - start, settings.budget_s)


def build_checks(settings: Settings) -> list[Check]:
    """The checks of the selected groups, over every registered architecture."""
    archs = ARCHITECTURES.entries()
    checks: list[Check] = []
    if "train" in settings.groups:
        eager: dict[str, list[float]] = {}
        for a in archs:
            checks.append(Check(f"train eager: {a.name}", partial(check_train_eager, a, settings, eager)))
            checks.append(Check(f"train compiled: {a.name}", partial(check_train_compiled, a, settings, eager)))
    if "resume" in settings.groups:
        for a in archs:
            checks.append(Check(f"resume: {a.name}", partial(check_resume, a, settings)))
    if "data-parallel" in settings.groups:
        for a in archs:
            checks.append(Check(f"data parallel: {a.name}", partial(check_data_parallel, a, settings)))
    if "bench" in settings.groups:
        for b in settings.bench:
            for a in archs:
                for compiled in (False, True) if settings.bench_compiled else (False,):
                    mode = "compiled" if compiled else "eager"
                    where = b.size or "stand-in"
                    checks.append(Check(f"bench {mode}: {a.name} {where}",
                                        partial(check_bench, a, settings, b, compiled)))
    return checks


# ------------------------------------------------------------------ helpers
def _free_memory(device: torch.device) -> None:
    if device.type == "cuda":
        gc.collect()  # a failed check's frames may still hold its tensors
        torch.cuda.empty_cache()


def _reset_compiler() -> None:
    """Drop compiled graphs and their guards (each check builds new models; dynamo's
    per-function recompile limit would otherwise fill up across checks and runs)."""
    try:
        torch._dynamo.reset()
    except Exception:  # noqa: BLE001 - best effort
        pass


def _random_batches(shape: Shape, steps: int, seed: int,
                    device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed + 1)
    out = []
    for _ in range(steps):
        inputs = torch.randint(0, shape.vocab, (shape.batch, shape.context), generator=generator)
        targets = torch.randint(0, shape.vocab, (shape.batch, shape.context), generator=generator)
        out.append((inputs.to(device), targets.to(device)))
    return out


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _max_rel(a: list[float], b: list[float]) -> float:
    return max((abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b)), default=0.0)


def _judge(device: torch.device, exact: bool, diff: float, spread: Callable[[], float]) -> tuple[str, str]:
    """(status, words) for a comparison that must be bit-exact. On CUDA a difference is
    accepted when two identical runs differ too (nondeterministic kernels) and it stays
    within NONDETERMINISM_RTOL; `spread()` measures that run-to-run difference."""
    if exact:
        return PASS, "bit-exact"
    if device.type != "cuda":
        return FAIL, f"not bit-exact (max rel diff {diff:.3g}); the CPU is deterministic"
    floor = spread()
    if floor == 0.0:
        return FAIL, f"not bit-exact (max rel diff {diff:.3g}) although two identical runs are"
    status = PASS if diff <= NONDETERMINISM_RTOL else FAIL
    return status, (f"not bit-exact: max rel diff {diff:.3g} (identical runs differ by {floor:.3g}: "
                    f"nondeterministic CUDA kernels; tolerance {NONDETERMINISM_RTOL:g})")


# ------------------------------------------------------------------ 1. train: eager and compiled
def _train_losses(a: Architecture, settings: Settings, compiled: bool) -> list[float]:
    device, shape = settings.device, settings.train_shape
    batches = _random_batches(shape, settings.train_steps, settings.seed, device)
    torch.manual_seed(settings.seed)
    model = build_model(shape.config(a.name)).to(device)
    model.train()
    optimizer = build_optimizer(model, TrainSpec(lr=settings.lr, warmup_fraction=0.0), device)
    amp = autocast(device, settings.precision)
    losses = []
    try:
        if compiled:
            model.compile_hot_path()
        for inputs, targets in batches:
            with amp():
                out = model.step(inputs, targets)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(out.loss.detach().float())
        values = torch.stack(losses).tolist()  # one device sync
    finally:
        del model, optimizer
        _free_memory(device)
    return values


def check_train_eager(a: Architecture, settings: Settings, eager: dict) -> tuple[str, str, dict]:
    losses = _train_losses(a, settings, compiled=False)
    eager[a.name] = losses
    shape = settings.train_shape.describe()
    details = {"losses": losses, "shape": shape, "precision": settings.precision}
    if not all(math.isfinite(x) for x in losses):
        raise CheckFailed(f"non-finite loss: {[_fmt(x) for x in losses]}")
    figures = f"{settings.precision}, {shape}: loss {_fmt(losses[0])} -> {_fmt(losses[-1])} in {len(losses)} steps"
    return PASS, figures, details


def check_train_compiled(a: Architecture, settings: Settings, eager: dict) -> tuple[str, str, dict]:
    import torch._inductor.config as inductor_config

    try:
        # Random draws inside a compiled graph use eager's generator: same candidates, same loss.
        with inductor_config.patch(fallback_random=True):
            losses = _train_losses(a, settings, compiled=True)
    finally:
        _reset_compiler()
    details = {"losses": losses, "registry_compiles": a.compiles}
    if not all(math.isfinite(x) for x in losses):
        raise CheckFailed(f"non-finite loss: {[_fmt(x) for x in losses]}")
    reference = eager.get(a.name)
    if not reference:
        return SKIP, "compiled ran; no eager losses to compare with (the eager check failed or was not run)", details
    rtol = COMPILE_RTOL[settings.precision]
    rel = abs(losses[0] - reference[0]) / max(abs(reference[0]), 1e-12)
    details.update(step1_rel_diff=rel, rtol=rtol)
    figures = (f"step 1 loss {_fmt(losses[0])} vs eager {_fmt(reference[0])}: rel diff {rel:.2g} "
               f"(tol {rtol:g}); loss -> {_fmt(losses[-1])}")
    return (PASS if rel <= rtol else FAIL), figures, details


# ------------------------------------------------------------------ 2. resume
def write_token_corpus(folder: Path, tokens: int, seed: int) -> tuple[Path, Path]:
    """A flat uint16 token file of random documents (byte-symbol ids, end-of-document id 0)
    and a byte-level BPE tokenizer.json that covers them: data that needs no download."""
    from ebt_scaling.harness.data.tokenizer import MIN_BPE_VOCAB, train_bpe

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_bpe(["selftest data: no download needed"] * 4, MIN_BPE_VOCAB)
    tokenizer_path = folder / "tokenizer.json"
    tokenizer.save(str(tokenizer_path))
    rng = np.random.default_rng(seed)
    docs, n = [], 0
    while n < tokens:
        length = int(rng.integers(16, 160))
        docs.append(np.append(rng.integers(2, 258, length), 0))
        n += length + 1
    tokens_path = folder / "tokens.bin"
    np.concatenate(docs).astype(np.uint16).tofile(tokens_path)
    return tokens_path, tokenizer_path


def resume_spec(a: Architecture, settings: Settings, tokens_path: Path, tokenizer_path: Path, cache: Path) -> RunSpec:
    s = settings.resume_shape
    return spec_from_dict({
        "model": {"arch": a.name, "n_layers": s.n_layers, "d_model": s.d_model, "n_heads": s.n_heads,
                  "vocab_size": s.vocab, "context": s.context},
        "data": {"source": "tokens", "tokens_path": str(tokens_path), "tokenizer_path": str(tokenizer_path),
                 "cache_dir": str(cache), "val_fraction": 0.1},
        "train": {"tokens": settings.resume_steps * s.batch * s.context, "batch_size": s.batch, "lr": 3e-3},
        "eval": {"points": 3, "batches": 2, "batch_size": s.batch},
        "checkpoint_every": settings.resume_checkpoint_every, "log_every": 1, "seed": settings.seed,
        "precision": settings.precision, "device": settings.device.type,
        # Eager: resume is about checkpoints (weights, AdamW state, RNG, data position), and the
        # train group compiles already; three compilations per architecture would eat the budget.
        "compile": False,
    }, "selftest resume spec")


def _stop_after(steps: int) -> Callable[[], bool]:
    calls = {"n": 0}

    def requested() -> bool:  # asked once per optimizer step
        calls["n"] += 1
        return calls["n"] >= steps

    return requested


@contextmanager
def _local_rank(device: torch.device) -> Iterator[None]:
    """train_run places a "cuda" run on LOCAL_RANK's device: point it at this device."""
    before = os.environ.get("LOCAL_RANK")
    if device.type == "cuda":
        os.environ["LOCAL_RANK"] = str(device.index if device.index is not None else torch.cuda.current_device())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LOCAL_RANK", None)
        else:
            os.environ["LOCAL_RANK"] = before


def _tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested checkpoint payload, by path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_tensors(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_tensors(v, f"{prefix}.{i}"))
    return out


def _final_state(run: Path) -> dict[str, torch.Tensor]:
    newest = RunDir(run).checkpoints()[0]
    state = torch.load(newest, map_location="cpu", weights_only=False)
    return _tensors({"model": state["model"], "optimizer": state["optimizer"]["state"]})


def _run_difference(a: Path, b: Path) -> tuple[bool, float, int, int]:
    """(bit-exact, max relative difference of the logged losses and of the final weights
    and optimizer state, metrics rows compared, tensors compared)."""
    rows_a = [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in RunDir(a).metrics()]
    rows_b = [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in RunDir(b).metrics()]
    if [r["step"] for r in rows_a] != [r["step"] for r in rows_b]:
        raise CheckFailed(f"metrics rows differ in their steps: {[r['step'] for r in rows_a]} vs "
                          f"{[r['step'] for r in rows_b]}")
    ta, tb = _final_state(a), _final_state(b)
    if set(ta) != set(tb):
        raise CheckFailed(f"checkpoints hold different tensors: {sorted(set(ta) ^ set(tb))[:4]}")
    exact = rows_a == rows_b and all(torch.equal(ta[k], tb[k]) for k in ta)
    keys = ("train_loss", "val_loss")
    diff = _max_rel([r[k] for r in rows_a for k in keys if k in r], [r[k] for r in rows_b for k in keys if k in r])
    for k in ta:
        x, y = ta[k].double(), tb[k].double()
        if x.shape != y.shape:
            raise CheckFailed(f"checkpoint tensor {k} has shape {tuple(x.shape)} vs {tuple(y.shape)}")
        if x.numel():
            diff = max(diff, float((x - y).norm() / y.norm().clamp(min=1e-12)))
    return exact, diff, len(rows_a), len(ta)


def check_resume(a: Architecture, settings: Settings) -> tuple[str, str, dict]:
    with tempfile.TemporaryDirectory(prefix="ebt-selftest-") as tmp, _local_rank(settings.device):
        root = Path(tmp)
        s = settings.resume_shape
        tokens_path, tokenizer_path = write_token_corpus(root / "corpus", 3 * settings.resume_steps * s.batch
                                                         * (s.context + 1) + 4096, settings.seed)
        spec = resume_spec(a, settings, tokens_path, tokenizer_path, root / "cache")
        reference = train_run(spec, root / "reference", quiet=True)
        if reference.get("status") != "done":
            raise CheckFailed(f"the uninterrupted run ended {reference.get('status')!r}: {reference.get('note', '')}")
        stopped = train_run(spec, root / "resumed", quiet=True, stop_requested=_stop_after(settings.resume_stop))
        if stopped != {"status": "preempted", "step": settings.resume_stop}:
            raise CheckFailed(f"the stop request after step {settings.resume_stop} returned {stopped}")
        resumed = train_run(spec, root / "resumed", quiet=True)
        if resumed.get("status") != "done":
            raise CheckFailed(f"the resumed run ended {resumed.get('status')!r}")
        if "resuming from step_" not in RunDir(root / "resumed").log_path.read_text():
            raise CheckFailed("the second call did not resume from a checkpoint (see its train.log)")
        exact, diff, n_rows, n_tensors = _run_difference(root / "resumed", root / "reference")

        def spread() -> float:
            train_run(spec, root / "reference-2", quiet=True)
            return _run_difference(root / "reference-2", root / "reference")[1]

        status, words = _judge(settings.device, exact, diff, spread)
    figures = (f"{spec.total_steps} steps, stopped after {settings.resume_stop} and resumed: {words} vs an "
               f"uninterrupted run ({n_rows} metrics rows, {n_tensors} weight and optimizer tensors)")
    return status, figures, {"bit_exact": exact, "max_rel_diff": diff, "val_loss": resumed.get("val_loss"),
                             "shape": s.describe()}


# ------------------------------------------------------------------ 3. data parallel, one process
class OneProcessGroup(DistributedContext):
    """A world of one process with a real process group. DistributedContext skips every
    collective when it is alone; here they run, so the gradients go through the same
    flat-buffer all-reduce as in a multi-process run."""

    @property
    def active(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dp_steps(a: Architecture, settings: Settings,
              ctx: DistributedContext) -> tuple[list[list[torch.Tensor]], list[float]]:
    """The trainer's step (forward, backward, gradient all-reduce, metric all-reduce,
    clipping, AdamW) for dp_steps batches: each step's gradients after the all-reduce and
    each step's reduced loss."""
    device, shape = settings.device, settings.train_shape
    batches = _random_batches(shape, settings.dp_steps, settings.seed + 7, device)
    torch.manual_seed(settings.seed)
    model = build_model(shape.config(a.name)).to(device)
    model.train()
    optimizer = build_optimizer(model, TrainSpec(lr=settings.lr, warmup_fraction=0.0), device)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    amp = autocast(device, settings.precision)
    grads, losses = [], []
    try:
        for inputs, targets in batches:
            with amp():
                out = model.step(inputs, targets)
            out.loss.backward()  # the whole global batch is this process's: weight 1
            ctx.all_reduce_gradients(params)
            grads.append([p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params])
            reduced = ctx.all_reduce_sum(torch.stack([out.metrics["ce"].detach().float(),
                                                      torch.zeros((), device=device)]))
            losses.append(reduced[0])
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        ctx.barrier()
        if ctx.gather_objects({"rank": ctx.rank}) != [{"rank": 0}]:
            raise CheckFailed("gather_objects over the group did not return this process's object")
        values = torch.stack(losses).tolist()
    finally:
        del model, optimizer
    return grads, values


def _grad_difference(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> tuple[bool, float]:
    exact, diff = True, 0.0
    for step_a, step_b in zip(a, b):
        for x, y in zip(step_a, step_b):
            if not torch.equal(x, y):
                exact = False
                diff = max(diff, float((x.double() - y.double()).norm() / y.double().norm().clamp(min=1e-12)))
    return exact, diff


def check_data_parallel(a: Architecture, settings: Settings) -> tuple[str, str, dict]:
    device = settings.device
    if not dist.is_available():
        return SKIP, "torch.distributed is not available in this build of torch", {}
    if dist.is_initialized():
        raise CheckFailed("a torch.distributed process group is already initialised in this process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    reference, ref_losses = _dp_steps(a, settings, DistributedContext())  # no group: as a 1-process run
    port = free_port()
    bind = {}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        bind["device_id"] = device  # NCCL: this process's GPU, known from the start (barrier, gather)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60), **bind)
    ctx = OneProcessGroup(rank=0, world_size=1, local_rank=0)
    try:
        grads, losses = _dp_steps(a, settings, ctx)
    finally:
        ctx.close()
    if dist.is_initialized():
        raise CheckFailed("the process group is still initialised after DistributedContext.close()")
    _free_memory(device)
    exact, diff = _grad_difference(grads, reference)
    exact = exact and losses == ref_losses

    def spread() -> float:
        again, _ = _dp_steps(a, settings, DistributedContext())
        return _grad_difference(again, reference)[1]

    status, words = _judge(device, exact, max(diff, _max_rel(losses, ref_losses)), spread)
    n = len(grads[0]) if grads else 0
    figures = (f"{backend}, world 1, port {port}, {len(grads)} steps: gradients ({n} tensors per step) and "
               f"reduced losses {words} vs no process group; group destroyed")
    return status, figures, {"backend": backend, "bit_exact": exact, "max_rel_diff": diff, "losses": losses}


# ------------------------------------------------------------------ 4. bench
def check_bench(a: Architecture, settings: Settings, b: BenchShape, compiled: bool) -> tuple[str, str, dict]:
    shape = b.shape
    try:
        r = bench_model(shape.config(a.name), batch=shape.batch, ctx=shape.context, device=settings.device,
                        precision=settings.precision, warmup=settings.bench_warmup, iters=settings.bench_iters,
                        compile=compiled, size_label=shape.label, seed=settings.seed)
    except BenchError as exc:
        raise CheckFailed(str(exc)) from None
    except torch.cuda.OutOfMemoryError:
        _free_memory(settings.device)
        raise CheckFailed(f"out of memory at {shape.describe()}") from None
    finally:
        if compiled:
            _reset_compiler()
    gib = r.peak_memory_bytes / 2**30
    memory = "GiB" if settings.device.type == "cuda" else "GiB peak RSS of the process"
    ours = f"{r.step_ms:.1f} ms/step ({r.tokens_per_s:,.0f} tok/s), {gib:.2f} {memory}"
    details = r.as_dict()
    reference = REFERENCE.get((a.name, b.size)) if b.size else None
    anchors = (shape.batch, shape.context, shape.vocab) == (REFERENCE_BATCH, REFERENCE_CTX, REFERENCE_VOCAB)
    if b.size is None:
        where = f"stand-in shape on {settings.device.type} {shape.describe(label=False)}, no reference"
    elif reference and anchors and settings.precision == "bf16":
        ref_ms, ref_gib = reference
        details.update(reference_ms=ref_ms, reference_gib=ref_gib, speedup=ref_ms / r.step_ms)
        where = f"reference {ref_ms} ms, {ref_gib} GiB: speed-up {ref_ms / r.step_ms:.2f}x"
    else:
        where = f"{shape.describe()}: no reference figure at these settings"
    if compiled and not r.compiled:
        note = next((n for n in r.notes if "compile" in n), "torch.compile failed")
        return FAIL, f"{note} -- eager instead: {ours}", details
    if not (math.isfinite(r.step_ms) and r.step_ms > 0):
        raise CheckFailed(f"step time {r.step_ms} ms")
    return PASS, f"{ours}; {where}", details


# ------------------------------------------------------------------ presentation
def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def format_report(report: Report) -> str:
    s = report.settings
    header = (f"selftest on {report.device} ({report.device_name}), torch {report.torch_version}, "
              f"{s['precision']}{' autocast' if s['precision'] == 'bf16' else ''}"
              f"{', --quick' if s.get('quick') else ''}")
    lines = [header, "", "| check | status | figures | seconds |", "|---|---|---|---|"]
    for r in report.rows:
        lines.append(f"| {_cell(r.check)} | {r.status} | {_cell(r.figures)} | {r.seconds:.1f} |")
    counts = {k: sum(r.status == k for r in report.rows) for k in (PASS, FAIL, SKIP)}
    lines.append("")
    total = f"total {report.total_s:.1f} s: " + ", ".join(f"{n} {k}" for k, n in counts.items())
    if report.budget_s is not None:
        total += f" (budget {report.budget_s:.0f} s" + (": over budget)" if report.total_s > report.budget_s else ")")
    lines.append(total)
    return "\n".join(lines)
