"""Expand a sweep into paired RunSpecs.

A *point* of the sweep is (axis value, shape, seed); at every point each architecture
gets one run, and those runs form a *pair* (a group when there are more than two
architectures): the same backbone shape, data, data order (seed), batch, LR schedule and
either the same tokens (``pairing: tokens``, the paper's protocol) or the same training
FLOPs in the sweep's convention (``pairing: flops``: each architecture trains for
budget / its own FLOPs per step, rounded to whole steps, so EBT gets fewer tokens).

Tokens are always a whole number of optimizer steps (batch x context each). The FLOPs a
pair shares are the reference architecture's at the point's tokens (or the axis budget).
The pair id is a hash of the shared parts (spec without model.arch, model.options and tags;
under flops pairing without train.tokens / warmup_fraction but with the budget).

Nothing here builds a model: parameter counts and FLOPs per token are analytic
(models/flops.py) and cached per model config.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ebt_scaling.harness.contract.errors import ConfigError, require
from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.harness.contract.spec import RunSpec, identity_dict, spec_hash
from ebt_scaling.harness.contract.throughput import Rate, Rates, ThroughputFile, default_mfu
from ebt_scaling.models.flops import CONVENTIONS, flops_per_token, param_counts

from . import cooldown, rules, tuning
from .shapes import Shape, ShapeSolver, SolvedShape, shape_name
from .sweep_spec import (
    FIXED_SIZE_AXES,
    ExplicitSize,
    SweepSpec,
    arch_options,
    axis_values,
    base_spec,
    parse_size,
    require_run_count,
)


@dataclass
class PlannedRun:
    spec: RunSpec
    run_id: str
    pair_id: str
    arch_label: str
    arch: str
    size_name: str
    seed: int
    axis_value: str
    tokens: int
    steps: int
    batch: int
    lr: float
    params: dict[str, int]  # {"total", "non_embedding"} of this architecture's model
    flops: dict[str, float]  # training FLOPs of the whole run, per convention
    flops_per_token: dict[str, float]
    gpu_hours: float  # full-convention FLOPs / the achieved FLOP/s of `rate`
    budget: float | None = None  # the pair's FLOP budget (sweep's convention) when it has one
    target_params: float | None = None  # what the shape rule was asked for
    achieved_params: int | None = None  # the sweep's param_count of the reference architecture at this shape
    warnings: tuple[str, ...] = ()
    rate: Rate | None = None  # the training rate gpu_hours assumes, and its source

    @property
    def shape(self) -> tuple[int, int, int]:
        m = self.spec.model
        return m.n_layers, m.d_model, m.n_heads

    def row(self) -> dict[str, Any]:
        """One JSON-safe row of plan.json."""
        m = self.spec.model
        return {"run_id": self.run_id, "pair_id": self.pair_id, "arch_label": self.arch_label, "arch": self.arch,
                "size": self.size_name, "seed": self.seed, "axis_value": self.axis_value,
                "n_layers": m.n_layers, "d_model": m.d_model, "n_heads": m.n_heads,
                "params_total": self.params["total"], "params_non_embedding": self.params["non_embedding"],
                "target_params": self.target_params, "achieved_params": self.achieved_params, "tokens": self.tokens, "steps": self.steps,
                "batch": self.batch, "lr": self.lr, "flops": self.flops, "flops_per_token": self.flops_per_token,
                "budget": self.budget, "gpu_hours": self.gpu_hours,
                "gpu_hours_source": self.rate.source if self.rate else None,
                "achieved_flops_per_second": self.rate.flops_per_s if self.rate else None,
                "tags": dict(self.spec.tags)}


@dataclass
class Plan:
    sweep: SweepSpec
    runs: list[PlannedRun]
    warnings: list[str] = field(default_factory=list)
    throughput_file: ThroughputFile | None = None  # the bench file consulted for GPU-hours

    def rates_by_label(self) -> dict[str, list[Rate]]:
        """Every architecture label's distinct rates, in plan order."""
        out: dict[str, dict[int, Rate]] = {}
        for r in self.runs:  # Rates hands out one object per rate: dedupe by identity (fast)
            rates = out.setdefault(r.arch_label, {})
            if r.rate is not None:
                rates.setdefault(id(r.rate), r.rate)
        return {label: list(dict.fromkeys(rates.values())) for label, rates in out.items()}


@dataclass(frozen=True)
class _Point:
    axis_value: str
    solved: SolvedShape
    tokens: float | None = None  # data axis: explicit tokens
    budget: float | None = None  # compute / isoflop axes
    batch: int | None = None  # batch axis


def _fmt(value: float) -> str:
    return f"{value:.6g}"


class Planner:
    def __init__(self, sweep: SweepSpec, rates: Rates):
        self.sweep = sweep
        self.rates = rates
        self.base = base_spec(sweep)
        self.templates: list[ModelConfig] = []
        for i, entry in enumerate(sweep.architectures):
            self.templates.append(replace(self.base.model, arch=entry.arch, options=arch_options(sweep, i)))
        labels = [a.label for a in sweep.architectures]
        self.ref = labels.index(sweep.reference_label)
        self.solver = ShapeSolver(self.templates[self.ref], sweep.param_count, sweep.shape)
        self.context = self.base.model.context
        self._fpt: dict[ModelConfig, dict[str, float]] = {}
        self._params: dict[ModelConfig, dict[str, int]] = {}
        self._configs: dict[tuple[int, Shape], ModelConfig] = {}
        # Canonical JSON of the spec parts a sweep never changes, for fast run / pair ids.
        rest = identity_dict(replace(self.base, tags={}))
        for key in ("model", "train", "seed", "tags"):
            rest.pop(key)
        rest["data"].pop("cache_dir", None)  # as spec_hash: the cache location does not change a run
        self._rest_json = {k: json.dumps(v, sort_keys=True) for k, v in rest.items()}
        self._json: dict[Any, str] = {}
        self._fast_ids: bool | None = None  # None: not yet checked against spec_hash
        self._base_fields = {f.name: getattr(self.base, f.name) for f in fields(RunSpec) if f.init}
        self.warnings: list[str] = []

    # ----------------------------------------------------------------- cached analytics
    def config(self, arch_index: int, shape: Shape) -> ModelConfig:
        key = (arch_index, shape)
        hit = self._configs.get(key)
        if hit is None:
            hit = self._configs[key] = replace(self.templates[arch_index], n_layers=shape.n_layers,
                                               d_model=shape.d_model, n_heads=shape.n_heads)
        return hit

    def fpt(self, config: ModelConfig) -> dict[str, float]:
        hit = self._fpt.get(config)
        if hit is None:
            hit = self._fpt[config] = {c: flops_per_token(config, c, self.context) for c in CONVENTIONS}
        return hit

    def params(self, config: ModelConfig) -> dict[str, int]:
        hit = self._params.get(config)
        if hit is None:
            hit = self._params[config] = param_counts(config)
        return hit

    def ref_fpt(self, shape: Shape) -> float:
        return self.fpt(self.config(self.ref, shape))[self.sweep.flops.convention]

    # ----------------------------------------------------------------- sizes from budgets
    def optimum(self, budget: float) -> float:
        """The parameter target the token rule predicts as compute-optimal for a budget."""
        tr = self.sweep.tokens
        if tr.rule == "compute_optimal":
            return rules.compute_optimal_params(budget, tr.coefficient, tr.exponent)
        # tokens_per_param: solve C = fpt(N) * r * N, i.e. N = sqrt(C / (r * fpt(N) / N)). FLOPs
        # per token per parameter (q) vary slowly with N, so iterate on q of the nearest real
        # shape: a continuous optimum, unaffected by the jumps between discrete shapes. Every budget
        # starts from the same guess (no state carried between budgets), so the sizes and run ids at
        # a budget do not depend on which other budgets the sweep holds.
        r = tr.tokens_per_param
        n = math.sqrt(budget / (6.0 * r))
        for _ in range(8):
            solved = self.solver.solve(n)
            q = self.ref_fpt(solved.shape) / solved.achieved
            new = math.sqrt(budget / (r * q))
            done = abs(math.log(new / n)) < 1e-3
            n = new
            if done:
                break
        return n

    # ----------------------------------------------------------------- points
    def fixed_size(self) -> SolvedShape:
        return self.solver.resolve(parse_size(self.sweep.axis.size, "axis.size"))

    def points(self) -> list[_Point]:
        axis, hd = self.sweep.axis, self.sweep.shape.head_dim
        values = axis_values(self.sweep)
        out: list[_Point] = []
        if axis.name == "parameters":
            for i, v in enumerate(values):
                label = v if isinstance(v, str) else (v.name or shape_name(v.n_layers, v.d_model)) \
                    if isinstance(v, ExplicitSize) else _fmt(v)
                out.append(_Point(label, self._checked(self.solver.resolve(v), f"axis.values[{i}]")))
        elif axis.name in FIXED_SIZE_AXES:
            base = self.fixed_size()
            b = base.shape
            for i, v in enumerate(values):
                key = f"axis.values[{i}]"
                if axis.name == "data":
                    out.append(_Point(_fmt(v), base, tokens=v))
                elif axis.name == "batch":
                    out.append(_Point(str(v), base, batch=v))
                elif axis.name == "width":
                    if v % hd:
                        raise ConfigError(f"{key}: d_model {v} is not a multiple of shape.head_dim ({hd}); use "
                                          f"multiples of {hd} (n_heads = d_model / head_dim)")
                    shape = Shape(b.n_layers, v, v // hd, shape_name(b.n_layers, v))
                    out.append(_Point(str(v), self._explicit(shape)))
                else:  # depth
                    shape = Shape(v, b.d_model, b.n_heads, shape_name(v, b.d_model))
                    out.append(_Point(str(v), self._explicit(shape)))
        else:
            for v in values:
                n_opt = self.optimum(v)
                if axis.name == "compute":
                    targets = [n_opt]
                else:  # the planned points, and any sizes `plan --extend` added beyond them
                    targets = [n_opt * axis.spread ** o for o in axis.offsets(v)]
                for t in targets:
                    out.append(_Point(_fmt(v), self.solver.solve(t), budget=v))
        return out

    def _explicit(self, shape: Shape) -> SolvedShape:
        return SolvedShape(shape, None, self.solver.count(shape.n_layers, shape.d_model, shape.n_heads))

    def _checked(self, solved: SolvedShape, key: str) -> SolvedShape:
        s = solved.shape
        if s.d_model % s.n_heads or (s.d_model // s.n_heads) % 2:
            raise ConfigError(f"{key}: d_model {s.d_model} must be n_heads ({s.n_heads}) x an even head_dim")
        return solved

    # ----------------------------------------------------------------- runs
    def plan(self) -> Plan:
        sweep, base, ref = self.sweep, self.base, self.ref
        conv = sweep.flops.convention
        hr = sweep.hparams
        tr = sweep.tokens
        ctx = self.context
        rates = self.rates
        explicit = sweep.throughput.mfu
        if isinstance(explicit, float):
            for entry in sweep.architectures:
                if explicit > 2 * default_mfu(entry.arch):
                    self.warnings.append(
                        f"throughput.mfu {explicit:g} applies to {entry.label} too, whose documented default is "
                        f"{default_mfu(entry.arch):g}: its GPU-hours are likely understated; remove throughput.mfu to "
                        "use measured figures (`ebt-scaling bench --save`) or the defaults")
                    break
        runs: list[PlannedRun] = []
        seen: dict[str, PlannedRun] = {}
        warned: set[str] = set()
        points = self.points()
        self._check_repeat({p.axis_value for p in points})
        require_run_count(sum(len(self.seeds_at(p.axis_value)) for p in points) * len(sweep.architectures))
        for point in points:
            solved = point.solved
            shape = solved.shape
            if solved.warning and solved.warning not in warned:
                warned.add(solved.warning)
                self.warnings.append(solved.warning)
            ref_cfg = self.config(ref, shape)
            ref_params = self.params(ref_cfg)
            n = ref_params[sweep.param_count]
            batch = point.batch or rules.batch_size(hr.batch, n, ctx, base.train.batch_size, shape.name)
            tokens_per_step = batch * ctx
            step_flops_ref = self.fpt(ref_cfg)[conv] * tokens_per_step
            if point.budget is not None:
                budget = point.budget
                ref_steps = rules.whole_steps(budget / self.fpt(ref_cfg)[conv], tokens_per_step)
            else:
                if point.tokens is not None:
                    raw = point.tokens
                elif tr.rule == "tokens_per_param":
                    raw = rules.chinchilla_tokens(n, tr.tokens_per_param)
                elif tr.rule == "compute_optimal":
                    raw = rules.compute_for_params(n, tr.coefficient, tr.exponent) / self.fpt(ref_cfg)[conv]
                elif tr.rule == "fixed":
                    raw = tr.tokens
                else:
                    raw = tr.steps * tokens_per_step
                ref_steps = rules.whole_steps(raw, tokens_per_step)
                budget = ref_steps * step_flops_ref if sweep.pairing == "flops" else None
            lr = rules.learning_rate(hr.lr, n, shape.name, ref_params["non_embedding"], base.train.lr)
            b2 = rules.beta2(hr.beta2, tokens_per_step, base.train.betas[1])
            betas = (base.train.betas[0], b2)
            if sweep.pairing == "flops" and budget is not None:
                steps_by_arch = [max(1, round(budget / (self.fpt(self.config(i, shape))[conv] * tokens_per_step)))
                                 if i != ref else ref_steps for i in range(len(self.templates))]
            else:
                steps_by_arch = [ref_steps] * len(self.templates)
            trains = []
            for steps in steps_by_arch:
                tokens = steps * tokens_per_step
                warm = rules.warmup_fraction(hr.warmup, n, tokens, base.train.warmup_fraction)
                try:
                    trains.append(replace(base.train, tokens=tokens, batch_size=batch, lr=lr, betas=betas,
                                          warmup_fraction=warm))
                except ConfigError as exc:
                    raise ConfigError(f"hparams: gives an invalid train.{exc} at size {shape.name}; adjust the rule")
            shared_budget = budget if sweep.pairing == "flops" else None
            train_jsons = [json.dumps(identity_dict(t), sort_keys=True) for t in trains]
            shared_train = self._train_json(trains[ref], shared_budget is not None)
            for seed in self.seeds_at(point.axis_value):
                pair_id = self._pair_id(shape, shared_train, seed, shared_budget)
                for i, entry in enumerate(sweep.architectures):
                    cfg = self.config(i, shape)
                    train = trains[i]
                    tags = {**base.tags, "sweep": sweep.name, "pair_id": pair_id, "arch_label": entry.label,
                            "axis": sweep.axis.name, "axis_value": point.axis_value, "size": shape.name,
                            "seed": str(seed), "pairing": sweep.pairing}
                    if point.budget is not None:
                        tags["budget"] = _fmt(point.budget)
                    try:
                        spec = RunSpec(**{**self._base_fields, "model": cfg, "train": train, "seed": seed,
                                          "tags": tags})
                    except ConfigError as exc:  # a base key that does not fit this run (its steps, its batch)
                        raise ConfigError(f"base.{exc} (run {entry.label} at size {shape.name}, axis value "
                                          f"{point.axis_value}; the sweep's base gives it to every run)") from None
                    run_id = self.run_id(spec, self._model_json(i, shape), train_jsons[i])
                    if run_id in seen:
                        msg = (f"axis value {point.axis_value} size {shape.name} seed {seed} {entry.label}: the same "
                               f"run as {seen[run_id].axis_value}/{seen[run_id].size_name} ({run_id}); planned once")
                        if msg not in warned:
                            warned.add(msg)
                            self.warnings.append(msg)
                        continue
                    fpt = self.fpt(cfg)
                    tokens = train.tokens
                    flops = {c: fpt[c] * tokens for c in CONVENTIONS}
                    rate = rates.rate(entry.arch, shape.n_layers, shape.d_model, spec.precision)
                    run = PlannedRun(spec=spec, run_id=run_id, pair_id=pair_id, arch_label=entry.label,
                                     arch=entry.arch, size_name=shape.name, seed=seed, axis_value=point.axis_value,
                                     tokens=tokens, steps=tokens // tokens_per_step, batch=batch, lr=lr,
                                     params=self.params(cfg), flops=flops, flops_per_token=fpt,
                                     gpu_hours=rate.hours(flops["full"]), rate=rate,
                                     budget=budget if (point.budget is not None or sweep.pairing == "flops") else None,
                                     target_params=solved.target, achieved_params=solved.achieved,
                                     warnings=(solved.warning,) if solved.warning else ())
                    seen[run_id] = run
                    runs.append(run)
        runs = tuning.expand_trials(self, runs)
        require_run_count(len(runs))
        runs = cooldown.add_branches(self, runs)
        require_run_count(len(runs))
        return Plan(sweep, runs, self.warnings, self.rates.file)

    def _check_repeat(self, values: set[str]) -> None:
        repeat = self.sweep.repeat
        if repeat is None:
            return
        for i, v in enumerate(repeat.at):   # a warning: overriding the axis of a preset must not fail it
            if v not in values:
                self.warnings.append(f"repeat.at[{i}]: {v!r} is not an axis value of this sweep (one of "
                                     f"{', '.join(sorted(values)[:12])}): no repeated seeds there")
        for i, seed in enumerate(repeat.seeds):
            require(seed not in self.sweep.seeds, f"repeat.seeds[{i}]",
                    f"seed {seed} is already one of seeds {list(self.sweep.seeds)}; give another")

    def seeds_at(self, axis_value: str) -> tuple[int, ...]:
        """The sweep's seeds, plus ``repeat.seeds`` at the axis values ``repeat.at`` names."""
        repeat = self.sweep.repeat
        if repeat is None or axis_value not in repeat.at:
            return self.sweep.seeds
        return self.sweep.seeds + repeat.seeds

    # ----------------------------------------------------------------- ids
    def _model_json(self, arch_index: int, shape: Shape) -> str:
        key = ("model", arch_index, shape)
        hit = self._json.get(key)
        if hit is None:
            hit = self._json[key] = json.dumps(identity_dict(self.config(arch_index, shape)), sort_keys=True)
        return hit

    def _shared_model_json(self, shape: Shape) -> str:
        key = ("shared-model", shape)
        hit = self._json.get(key)
        if hit is None:
            model = {k: v for k, v in identity_dict(self.config(self.ref, shape)).items() if k not in ("arch", "options")}
            hit = self._json[key] = json.dumps(model, sort_keys=True)
        return hit

    @staticmethod
    def _train_json(train, shared_budget: bool) -> str:
        tr = identity_dict(train)
        if shared_budget:
            tr.pop("tokens")
            tr.pop("warmup_fraction")
        return json.dumps(tr, sort_keys=True)

    @staticmethod
    def _hash(parts: dict[str, str]) -> str:
        """sha256 of the JSON object whose members are the given pre-serialised parts: the
        same text json.dumps(..., sort_keys=True) writes for the whole object (keys are
        plain identifiers, so no escaping)."""
        text = "{" + ", ".join(f'"{k}": {parts[k]}' for k in sorted(parts)) + "}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def run_id(self, spec: RunSpec, model_json: str, train_json: str) -> str:
        """spec_hash(spec) (harness/contract/spec.py) from cached JSON of the parts. Checked against
        spec_hash on the first run of every plan; should spec_hash ever hash differently
        (a new field, another exclusion), every run falls back to spec_hash itself."""
        if self._fast_ids is False:
            return spec_hash(spec)
        run_id = self._hash({**self._rest_json, "model": model_json, "train": train_json, "seed": str(spec.seed)})
        if self._fast_ids is None:
            slow = spec_hash(spec)
            self._fast_ids = run_id == slow
            return slow
        return run_id

    def _pair_id(self, shape: Shape, shared_train_json: str, seed: int, budget: float | None) -> str:
        """Hash of what the runs of a pair share: the spec without model.arch / model.options
        (and, under flops pairing, without train.tokens / warmup_fraction but with the budget)."""
        parts = {**self._rest_json, "model": self._shared_model_json(shape), "seed": str(seed),
                 "pairing": json.dumps(self.sweep.pairing), "train": shared_train_json}
        if budget is not None:
            parts["budget"] = json.dumps({"flops": budget, "convention": self.sweep.flops.convention})
        return self._hash(parts)


def make_plan(sweep: SweepSpec, throughput: ThroughputFile | None = None, device: str | None = None) -> Plan:
    """Every run of the sweep plus the plan's warnings (shape misses, duplicate runs).
    GPU-hours use `throughput` (a bench file; harness/contract/throughput.py) where the sweep
    sets no throughput.mfu, on the device whose name contains `device` (default: the newest
    GPU's). ConfigError 'SOURCE: key: message' when a value turns out impossible."""
    # outside the try: a --throughput-device error is not the sweep file's
    rates = Rates(throughput, peak_tflops=sweep.throughput.peak_tflops, mfu=sweep.throughput.mfu, device=device)
    try:
        return Planner(sweep, rates).plan()
    except ConfigError as exc:
        raise ConfigError(f"{sweep.source or 'sweep'}: {exc}") from None


def expand(sweep: SweepSpec) -> list[PlannedRun]:
    """The dispatcher's API: every planned run (spec, run_id, pair_id, arch_label, params,
    flops, tokens, gpu_hours, ...), in a stable order."""
    return make_plan(sweep).runs
