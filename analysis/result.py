"""Everything an analysis of a sweep found, typed; fits.json is built from it, once.

fits.json holds the configuration, the loss and FLOP convention, the runs (fitted and
excluded), the bootstrap, each law's section (laws/law.py: LAWS), Approaches 1 and 2, the
comparisons, the warnings and skipped fits, and the headline.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import pandas as pd

from .approach1 import Envelope
from .approach2 import Isoflop
from .comparison import Comparison
from .frontier import Frontier
from .headline import headline_sentences
from .laws.law import FitLaw, LawResult, Skipped
from .load import SweepData
from .points import FitPoints
from .seeds import SeedNoise
from .tuning import Tuning

if TYPE_CHECKING:
    from .pipeline import AnalysisConfig

LOSS_DEFINITION = ("final held-out validation loss: mean next-token negative log-likelihood in nats per token "
                   "over the validation batches, pad tokens excluded, at the run's last step (result.json val_loss)")
BOOTSTRAP_UNIT = ("sweep point (axis value, size, budget): all architectures and seeds of it are resampled "
                  "together")



@dataclass
class Caveats:
    """What an analysis doubts and what it could not do: warnings and skipped fits, in the
    order they were found. fits.json and the report list both; the command prints the
    warnings."""

    warnings: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)   # {"what", "label", "reason"}

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def skip(self, what: str, label: str | None, reason: str) -> None:
        self.skipped.append({"what": what, "label": label, "reason": reason})

@dataclass(frozen=True)
class TuningAnswer:
    """A tuned sweep's trials (every run, ``data``) and its answer at the rules' values."""

    tuning: Tuning
    data: SweepData                       # every run of the sweep, trials included
    untuned: Analysis | None              # None: no untuned run finished

    def to_json(self) -> dict:
        out = self.tuning.to_json()
        if self.untuned is not None:
            u = self.untuned.result
            out["untuned"] = {"headline": u["headline"], "comparisons": u["comparisons"],
                              "runs": u["runs"]["fitted"]}
        return out


@dataclass
class Analysis:
    config: AnalysisConfig
    data: SweepData
    fit_points: FitPoints
    laws: dict[FitLaw, dict[str, LawResult]]        # law -> label -> its fit
    approach1: dict[str, Envelope | Skipped]         # label -> frontier of its cooled-down final points
    approach2: dict[str, Isoflop | Skipped]          # label -> isoFLOP minima
    comparisons: dict[str, Comparison]               # candidate label -> against the reference
    flops_per_token_ratio: dict[str, dict]           # candidate label -> its FLOPs per token / the reference's
    caveats: Caveats
    frontiers: dict[str, Frontier] = field(default_factory=dict)   # isoFLOP sweeps: candidate -> on the frontier
    seeds: SeedNoise | None = None                  # points run with several seeds: their spread
    tuning: TuningAnswer | None = None              # a tuned sweep: its trials and untuned answer

    @property
    def all_runs(self) -> pd.DataFrame:
        """Every run of the sweep (trials included), for runs.csv."""
        return (self.tuning.data if self.tuning else self.data).runs

    @property
    def points(self) -> pd.DataFrame:
        """The fitted runs (one row per run)."""
        return self.fit_points.runs

    @property
    def axes(self) -> dict[str, str]:
        return self.fit_points.axes

    @property
    def labels(self) -> list[str]:
        return self.fit_points.labels

    @property
    def reference(self) -> str | None:
        return self.fit_points.reference

    @property
    def candidates(self) -> list[str]:
        return self.fit_points.candidates

    @cached_property
    def result(self) -> dict:
        """fits.json (before its strict-JSON conversion)."""
        return self.to_json()

    def to_json(self) -> dict:
        cfg, fp, runs = self.config, self.fit_points, self.data.runs
        out = {
            "config": {**{k: v for k, v in asdict(cfg).items() if k != "workers"},  # results do not depend on it
                       "params": fp.params_kind, "flops_column": fp.flops_col, "params_column": fp.n_col},
            "loss": LOSS_DEFINITION,
            "flop_convention": cfg.convention,
            "sweep": {k: v for k, v in (self.data.meta or {}).items() if k != "description"},
            "reference": fp.reference,
            "candidates": fp.candidates,
            "labels": {lb: self._label_json(lb) for lb in fp.labels},
            "runs": {"total": int(len(runs)),
                     "by_status": {str(k): int(v) for k, v in runs["status"].value_counts().sort_index().items()},
                     "fitted": int(len(fp.runs)), "excluded": fp.excluded},
            "bootstrap": {"n_resamples": cfg.bootstrap if len(fp.counts) else 0, "seed": cfg.seed, "ci": cfg.ci,
                          "n_units": int(fp.n_units), "unit": BOOTSTRAP_UNIT},
        }
        for law, fits in self.laws.items():
            out[law.section] = {lb: fit.to_json() for lb, fit in fits.items()}
        out["approach1"] = {lb: e.to_json() for lb, e in self.approach1.items()}
        out["approach2"] = {lb: e.to_json() for lb, e in self.approach2.items()}
        out["comparisons"] = {c: comp.to_json() for c, comp in self.comparisons.items()}
        out["flops_per_token_ratio"] = self.flops_per_token_ratio
        out["frontier"] = {c: f.to_json() for c, f in self.frontiers.items()}
        out["seed_noise"] = self.seeds.to_json() if self.seeds is not None else None
        out["warnings"] = self.caveats.warnings
        out["skipped"] = self.caveats.skipped
        if self.tuning is not None:
            out["tuning"] = self.tuning.to_json()
        out["headline"] = headline_sentences(self)
        return out

    def _label_json(self, label: str) -> dict:
        p = self.points[self.points["arch_label"] == label]
        flops = p[self.fit_points.flops_col]
        return {"arch": self.fit_points.arch_of.get(label), "n_points": int(len(p)),
                "n_units": int(p["unit"].nunique()), "n_seeds": int(p["seed"].nunique()),
                "flops_range": [float(flops.min()), float(flops.max())]}
