"""The answer in sentences: fits.json's "headline", the report's first section and what
`ebt-scaling analyze` prints. Per candidate: the FLOP slopes and their scaling-rate
advantage, the power laws' FLOP multiplier, each compared law's crossover; then
Approach 2's compute-optimal model size and the runs not fitted."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ebt_scaling.harness.contract.formatting import pct

from .approach2 import Isoflop
from .comparison import Efficiency, SlopeComparison
from .frontier import ESTIMATORS
from .laws.power import POWER_LAW
from .numbers import fmt_interval, fmt_num
from .paper import PAPER_ADVANTAGE
from .seeds import seed_sentence

if TYPE_CHECKING:
    from .result import Analysis


def headline_sentences(an: Analysis) -> list[str]:
    out = []
    ref = an.reference
    if not an.comparisons:
        reasons = [s["reason"] for s in an.caveats.skipped if s["what"] in ("comparisons", "power law vs flops")]
        out.append("No comparison of architectures could be made" + (f": {reasons[0]}" if reasons else
                                                                      " (no finished runs of two architectures)") + ".")
        return out
    out.append(estimator_sentence(an))
    for cand, comp in an.comparisons.items():
        frontier = an.frontiers.get(cand)
        if frontier is not None:
            out.extend(_frontier(an, cand, frontier))
        rate = comp.rates.get("flops")
        if not isinstance(rate, SlopeComparison):
            out.append(f"{cand} vs {ref}: no FLOP power law ({rate.reason if rate is not None else 'skipped'}).")
            continue
        if frontier is not None:
            out.append("Per-axis power law through every run (off-optimal sizes included, so not the frontier): "
                       + _slopes(an, cand, rate))
            continue
        out.append(_slopes(an, cand, rate))
        if isinstance(comp.efficiency, Efficiency):
            out.extend(_efficiency(comp.efficiency, ref, cand))
    if an.seeds is not None:
        # seed noise is propagated to the per-axis FLOP slopes only (frontier answers: the spread alone)
        answers = {c: answer(an, c) for c in an.candidates}
        sentences = [seed_sentence(an.seeds.spreads, an.seeds.intervals.get(c), a[1], c)
                     for c, a in answers.items() if a is not None and a[2] == "per-axis FLOP power law"]
        out.extend(sentences or [seed_sentence(an.seeds.spreads, None, None, "")])
    if an.tuning is not None:
        out.extend(_tuning(an))
    a2 = [f"{lb} N* ∝ C^{e.fit.slope:.3f} {fmt_interval(e.to_json().get('intervals', {}).get('exponent'))}"
          for lb, e in an.approach2.items() if isinstance(e, Isoflop) and e.fit is not None]
    if a2:
        out.append("Compute-optimal model size (Approach 2, isoFLOP minima): " + "; ".join(a2) + ".")
    excluded = an.fit_points.excluded
    if excluded:
        ids = ", ".join(f"{e['run_id']} ({e['status']})" for e in excluded[:8])
        more = f" and {len(excluded) - 8} more" if len(excluded) > 8 else ""
        out.append(f"Not fitted: {len(excluded)} run(s): {ids}{more}; see the runs section.")
    return out


def estimator_sentence(an: Analysis) -> str:
    """Which estimator the headline's answer comes from."""
    tuned = " of the tuned runs (each cell's best trial)" if an.tuning is not None else ""
    if an.frontiers:
        used = sorted({e for f in an.frontiers.values() for e in f.estimators})
        return ("Estimator: the compute-optimal frontier L*(C) of an isoFLOP sweep" + tuned + ": "
                + "; ".join(ESTIMATORS[e] for e in used) + ".")
    axis = (an.data.meta or {}).get("axis") or "parameters"
    return (f"Estimator: the per-axis power law of final loss against FLOPs through every finished run{tuned} (a "
            f"{axis} sweep: each run is one point of the curve; no isoFLOP frontier).")


def answer(an: Analysis, cand: str) -> tuple[float, list | None, str] | None:
    """The headline's scaling-rate advantage of a candidate: (advantage, interval, where from)."""
    frontier = an.frontiers.get(cand)
    if frontier is not None and frontier.slopes is not None:
        j = frontier.slopes.to_json()
        return j["advantage"], j.get("intervals", {}).get("advantage"), "Approach 2 frontier"
    comp = an.comparisons.get(cand)
    rate = comp.rates.get("flops") if comp else None
    if isinstance(rate, SlopeComparison):
        j = rate.to_json()
        return j["advantage"], j.get("intervals", {}).get("advantage"), "per-axis FLOP power law"
    return None


def _frontier(an: Analysis, cand: str, frontier) -> list[str]:
    ref, out = an.reference, []
    if frontier.slopes is not None:
        j = frontier.slopes.to_json()
        out.append(f"On the frontier (Approach 2), {cand}'s L*(C) slope is {j['slope_candidate']:.4g} vs {ref}'s "
                   f"{j['slope_reference']:.4g}: scaling-rate advantage {pct(j['advantage'])} "
                   f"{fmt_interval(j.get('intervals', {}).get('advantage'), 3, pct=True)} "
                   f"({an.config.ci * 100:g}% paired-bootstrap intervals).")
    for name, eff in frontier.efficiency.items():
        row = next((r for r in eff.multiplier_json() if r["largest_reference_run"]), None)
        if row is not None:
            out.append(f"{ESTIMATORS[name]}: at {row['compute']:.3g} FLOPs (the largest {ref} run) {cand} needs "
                       f"{fmt_num(row[name])}× {fmt_interval(row.get(f'{name}_interval'))} the compute of {ref} "
                       "on the frontier.")
        for law, crossover in eff.crossovers.items():
            out.append(law.crossover_sentence(crossover.to_json(), eff.budget,
                                              _overtakes(crossover.found.better_below, ref, cand)))
    return out


def _tuning(an: Analysis) -> list[str]:
    t = an.tuning
    out = [t.tuning.budget_rule()]
    untuned = t.untuned
    for cand in an.candidates:
        tuned_answer = answer(an, cand)
        untuned_answer = answer(untuned, cand) if untuned is not None else None
        if tuned_answer is None:
            continue
        side = (f"untuned (the rules' values) {pct(untuned_answer[0])} {fmt_interval(untuned_answer[1], 3, pct=True)}"
                if untuned_answer else "untuned: no answer (no finished untuned pair)")
        out.append(f"{cand} vs {an.reference}, tuned vs untuned: scaling-rate advantage tuned "
                   f"{pct(tuned_answer[0])} {fmt_interval(tuned_answer[1], 3, pct=True)}, {side} "
                   f"({tuned_answer[2]}).")
    edges = t.tuning.edge_cells
    if edges:
        shown = "; ".join(f"{c.label} {c.size} ({', '.join(f'{k} {v}' for k, v in c.edges.items())})"
                          for c in edges[:6])
        more = f" and {len(edges) - 6} more" if len(edges) > 6 else ""
        out.append(f"Best value on the grid's edge in {len(edges)} cell(s): {shown}{more}; the optimum may lie "
                   "beyond: run `ebt-scaling plan --extend SWEEP_DIR`.")
    rules = [r.sentence() for r in t.tuning.lr_rules.values()]
    if rules:
        out.append("LR(N) rules from the best trials: " + "; ".join(rules) + ".")
    return out


def _slopes(an: Analysis, cand: str, rate: SlopeComparison) -> str:
    ref = an.reference
    power = an.laws[POWER_LAW]
    pl_r, pl_c = power[ref].axes["flops"].to_json(), power[cand].axes["flops"].to_json()
    ax = rate.to_json()
    paper = PAPER_ADVANTAGE["flops"]
    return (f"{cand}'s FLOP slope is {pl_c['slope']:.4g} {fmt_interval(pl_c.get('intervals', {}).get('slope'), 4)} "
            f"vs {ref}'s {pl_r['slope']:.4g} {fmt_interval(pl_r.get('intervals', {}).get('slope'), 4)}: "
            f"scaling-rate advantage {pct(ax['advantage'])} "
            f"{fmt_interval(ax.get('intervals', {}).get('advantage'), 3, pct=True)} "
            f"({an.config.ci * 100:g}% paired-bootstrap intervals; the paper reports +{paper[1]}% (v1), "
            f"+{paper[2]}% (later revision)).")


def _efficiency(eff: Efficiency, ref: str, cand: str) -> list[str]:
    out = []
    rows = eff.multiplier_json()
    parts = []
    name = POWER_LAW.name
    for row in rows:
        if row["largest_reference_run"] or row is rows[-1] or abs(math.log10(row["compute"]) - 15) < 1e-9:
            what = " (the largest " + ref + " run)" if row["largest_reference_run"] else ""
            parts.append(f"at {row['compute']:.3g} FLOPs{what} {cand} needs {fmt_num(row[name])}× "
                         f"{fmt_interval(row.get(f'{name}_interval'))} the compute of {ref} for the same loss")
    if parts:
        out.append("Power-law fits: " + "; ".join(parts) + f" (>1: {cand} needs more; the EBT paper: ≈10× at its scales).")
    for law, crossover in eff.crossovers.items():
        out.append(law.crossover_sentence(crossover.to_json(), eff.budget,
                                          _overtakes(crossover.found.better_below, ref, cand)))
    return out


def _overtakes(below: str | None, ref: str, cand: str) -> str:
    """Who overtakes whom at the first crossing (the curve lower below it is the one overtaken)."""
    if below == ref:
        return f"{cand} overtakes {ref}"
    if below == cand:
        return f"{ref} overtakes {cand} ({cand} is lower below the crossing)"
    return f"{cand} and {ref} cross"
