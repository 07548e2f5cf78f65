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
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ebt_scaling.harness.contract.errors import ConfigError, require
from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.harness.contract.spec import RunSpec, TrainSpec, identity_dict, spec_hash
from ebt_scaling.models.flops import CONVENTIONS, flops_per_token, param_counts

from . import cooldown, rules, tuning
from .axes import AxisPoint, format_value
from .shapes import Shape, ShapeSolver
from .sweep_spec import SWEEP_AXES, SweepSpec, arch_options, axis_values, base_spec, require_run_count
from .throughput import Rate, Rates, ThroughputFile, default_mfu


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


ModelFields = tuple[tuple[str, Any], ...]   # AxisPoint.model_fields


@dataclass(frozen=True)
class _PointTraining:
    """What every run at one point trains with: the rules' (or the axis') batch, LR and
    steps, one TrainSpec per architecture, and the FLOP budget the pairs share, if any."""

    batch: int
    tokens_per_step: int
    lr: float
    budget: float | None           # the point's budget, or under flops pairing the reference's FLOPs
    trains: list[TrainSpec]        # per architecture, in the sweep's order
    train_jsons: list[str]         # their canonical JSON (for run ids)
    shared_train_json: str         # what the runs of a pair share of it (for pair ids)

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
        self._fpt: dict[ModelConfig, dict[str, float]] = {}
        self._params: dict[ModelConfig, dict[str, int]] = {}
        self._configs: dict[tuple[int, Shape, ModelFields], ModelConfig] = {}
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
        self._warned: set[str] = set()

    # ----------------------------------------------------------------- cached analytics
    def config(self, arch_index: int, shape: Shape, model_fields: ModelFields = ()) -> ModelConfig:
        """An architecture's model at a shape, with the fields an axis point sets."""
        key = (arch_index, shape, model_fields)
        hit = self._configs.get(key)
        if hit is None:
            hit = self._configs[key] = replace(self.templates[arch_index], n_layers=shape.n_layers,
                                               d_model=shape.d_model, n_heads=shape.n_heads, **dict(model_fields))
        return hit

    def fpt(self, config: ModelConfig) -> dict[str, float]:
        """Training FLOPs per token of a model at its context, per convention."""
        hit = self._fpt.get(config)
        if hit is None:
            hit = self._fpt[config] = {c: flops_per_token(config, c) for c in CONVENTIONS}
        return hit

    def params(self, config: ModelConfig) -> dict[str, int]:
        hit = self._params.get(config)
        if hit is None:
            hit = self._params[config] = param_counts(config)
        return hit

    def reference_flops_per_token(self, shape: Shape) -> float:
        """The reference architecture's FLOPs per token at a shape, in the sweep's convention."""
        return self.fpt(self.config(self.ref, shape))[self.sweep.flops.convention]

    # ----------------------------------------------------------------- runs
    def plan(self) -> Plan:
        self._warn_if_one_mfu_understates()
        points = SWEEP_AXES.get(self.sweep.axis.name, "axis.name").points(self, axis_values(self.sweep))
        self._check_repeat({p.axis_value for p in points})
        require_run_count(sum(len(self.seeds_at(p.axis_value)) for p in points) * len(self.sweep.architectures))
        runs: list[PlannedRun] = []
        planned: dict[str, PlannedRun] = {}  # run id -> its run: a point that repeats another plans nothing
        for point in points:
            self._warn_once(point.solved.warning)
            training = self._point_training(point)
            for seed in self.seeds_at(point.axis_value):
                runs += self._pair(point, training, seed, planned)
        runs = tuning.expand_trials(self, runs)
        require_run_count(len(runs))
        runs = cooldown.add_branches(self, runs)
        require_run_count(len(runs))
        return Plan(self.sweep, runs, self.warnings, self.rates.file)

    def _warn_if_one_mfu_understates(self) -> None:
        """A single throughput.mfu far above an architecture's documented default."""
        mfu = self.sweep.throughput.mfu
        if not isinstance(mfu, float):
            return
        for entry in self.sweep.architectures:
            if mfu > 2 * default_mfu(entry.arch):
                self.warnings.append(
                    f"throughput.mfu {mfu:g} applies to {entry.label} too, whose documented default is "
                    f"{default_mfu(entry.arch):g}: its GPU-hours are likely understated; remove throughput.mfu to "
                    "use measured figures (`ebt-scaling bench --save`) or the defaults")
                return

    def _warn_once(self, message: str | None) -> None:
        if message and message not in self._warned:
            self._warned.add(message)
            self.warnings.append(message)

    def _point_training(self, point: AxisPoint) -> _PointTraining:
        """The batch, LR, beta2, steps and TrainSpecs of a point: the axis' where it fixes
        them, else the rules' at the reference architecture's size N."""
        sweep, train = self.sweep, self.base.train
        hparams = sweep.hparams
        shape = point.solved.shape
        reference = self.config(self.ref, shape, point.model_fields)
        reference_params = self.params(reference)
        n = reference_params[sweep.param_count]
        reference_fpt = self.fpt(reference)[sweep.flops.convention]
        batch = point.batch or rules.batch_size(hparams.batch, n, reference.context, train.batch_size,
                                                shape.name)
        tokens_per_step = batch * reference.context
        if point.budget is not None:
            budget = point.budget
            reference_steps = rules.whole_steps(budget / reference_fpt, tokens_per_step)
        else:
            reference_tokens = point.tokens if point.tokens is not None else \
                rules.training_tokens(sweep.tokens, n, reference_fpt, tokens_per_step)
            reference_steps = rules.whole_steps(reference_tokens, tokens_per_step)
            budget = reference_steps * (reference_fpt * tokens_per_step) if sweep.pairing == "flops" else None
        lr = rules.learning_rate(hparams.lr, n, shape.name, reference_params["non_embedding"], train.lr)
        betas = (train.betas[0], rules.beta2(hparams.beta2, tokens_per_step, train.betas[1]))
        trains = []
        for steps in self._steps_by_arch(point, budget, reference_steps, tokens_per_step):
            tokens = steps * tokens_per_step
            warmup = rules.warmup_fraction(hparams.warmup, n, tokens, train.warmup_fraction)
            try:
                trains.append(replace(train, tokens=tokens, batch_size=batch, lr=lr, betas=betas,
                                      warmup_fraction=warmup))
            except ConfigError as exc:
                raise ConfigError(f"hparams: gives an invalid train.{exc} at size {shape.name}; adjust the rule")
        shares_budget = sweep.pairing == "flops"
        return _PointTraining(batch, tokens_per_step, lr, budget, trains,
                              [json.dumps(identity_dict(t), sort_keys=True) for t in trains],
                              self._train_json(trains[self.ref], shares_budget))

    def _steps_by_arch(self, point: AxisPoint, budget: float | None, reference_steps: int,
                       tokens_per_step: int) -> list[int]:
        """Optimizer steps of each architecture: the reference's for all (tokens pairing), or
        under flops pairing as many as the shared budget buys each."""
        if self.sweep.pairing != "flops" or budget is None:
            return [reference_steps] * len(self.templates)
        convention = self.sweep.flops.convention
        return [reference_steps if i == self.ref else
                max(1, round(budget / (self.fpt(self.config(i, point.solved.shape, point.model_fields))[convention]
                                       * tokens_per_step)))
                for i in range(len(self.templates))]

    def _pair(self, point: AxisPoint, training: _PointTraining, seed: int,
              planned: dict[str, PlannedRun]) -> list[PlannedRun]:
        """The runs of one pair (every architecture at a point and seed), less any run
        already planned at another point (a warning)."""
        sweep, shape = self.sweep, point.solved.shape
        shared_budget = training.budget if sweep.pairing == "flops" else None
        pair_id = self._pair_id(shape, point.model_fields, training.shared_train_json, seed, shared_budget)
        runs = []
        for i, entry in enumerate(sweep.architectures):
            config, train = self.config(i, shape, point.model_fields), training.trains[i]
            tags = {**self.base.tags, "sweep": sweep.name, "pair_id": pair_id, "arch_label": entry.label,
                    "axis": sweep.axis.name, "axis_value": point.axis_value, "size": shape.name,
                    "seed": str(seed), "pairing": sweep.pairing}
            if point.budget is not None:
                tags["budget"] = format_value(point.budget)
            try:
                spec = RunSpec(**{**self._base_fields, "model": config, "train": train, "seed": seed, "tags": tags})
            except ConfigError as exc:  # a base key that does not fit this run (its steps, its batch)
                raise ConfigError(f"base.{exc} (run {entry.label} at size {shape.name}, axis value "
                                  f"{point.axis_value}; the sweep's base gives it to every run)") from None
            run_id = self.run_id(spec, self._model_json(i, shape, point.model_fields), training.train_jsons[i])
            if run_id in planned:
                same = planned[run_id]
                self._warn_once(f"axis value {point.axis_value} size {shape.name} seed {seed} {entry.label}: the "
                                f"same run as {same.axis_value}/{same.size_name} ({run_id}); planned once")
                continue
            planned[run_id] = run = self._planned_run(spec, run_id, pair_id, entry, point, training)
            runs.append(run)
        return runs

    def _planned_run(self, spec: RunSpec, run_id: str, pair_id: str, entry, point: AxisPoint,
                     training: _PointTraining) -> PlannedRun:
        shape, solved = spec.model, point.solved
        fpt = self.fpt(spec.model)
        tokens = spec.train.tokens
        flops = {c: fpt[c] * tokens for c in CONVENTIONS}
        rate = self.rates.rate(entry.arch, shape.n_layers, shape.d_model, spec.precision)
        return PlannedRun(spec=spec, run_id=run_id, pair_id=pair_id, arch_label=entry.label, arch=entry.arch,
                          size_name=solved.shape.name, seed=spec.seed, axis_value=point.axis_value, tokens=tokens,
                          steps=tokens // training.tokens_per_step, batch=training.batch, lr=training.lr,
                          params=self.params(spec.model), flops=flops, flops_per_token=fpt,
                          gpu_hours=rate.hours(flops["full"]), rate=rate, budget=training.budget,
                          target_params=solved.target, achieved_params=solved.achieved,
                          warnings=(solved.warning,) if solved.warning else ())

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
    def _model_json(self, arch_index: int, shape: Shape, model_fields: ModelFields) -> str:
        key = ("model", arch_index, shape, model_fields)
        hit = self._json.get(key)
        if hit is None:
            hit = self._json[key] = json.dumps(identity_dict(self.config(arch_index, shape, model_fields)),
                                               sort_keys=True)
        return hit

    def _shared_model_json(self, shape: Shape, model_fields: ModelFields) -> str:
        key = ("shared-model", shape, model_fields)
        hit = self._json.get(key)
        if hit is None:
            model = {k: v for k, v in identity_dict(self.config(self.ref, shape, model_fields)).items()
                     if k not in ("arch", "options")}
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

    def _pair_id(self, shape: Shape, model_fields: ModelFields, shared_train_json: str, seed: int,
                 budget: float | None) -> str:
        """Hash of what the runs of a pair share: the spec without model.arch / model.options
        (and, under flops pairing, without train.tokens / warmup_fraction but with the budget)."""
        parts = {**self._rest_json, "model": self._shared_model_json(shape, model_fields), "seed": str(seed),
                 "pairing": json.dumps(self.sweep.pairing), "train": shared_train_json}
        if budget is not None:
            parts["budget"] = json.dumps({"flops": budget, "convention": self.sweep.flops.convention})
        return self._hash(parts)


def make_plan(sweep: SweepSpec, throughput: ThroughputFile | None = None, device: str | None = None) -> Plan:
    """Every run of the sweep plus the plan's warnings (shape misses, duplicate runs).
    GPU-hours use `throughput` (a bench file; sweeps/throughput.py) where the sweep
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
