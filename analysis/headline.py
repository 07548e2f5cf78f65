"""The answer in sentences: fits.json's "headline", the report's first section and what
`ebt-scaling analyze` prints. Per candidate: the FLOP slopes and their scaling-rate
advantage, the power laws' FLOP multiplier, each compared law's crossover; then
Approach 2's compute-optimal model size and the runs not fitted."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ebt_scaling.harness.contract.formatting import fmt_interval, fmt_num, pct

from .approach2 import Isoflop
from .comparison import Efficiency, SlopeComparison
from .frontier import ESTIMATORS
from .laws.power import POWER_LAW
from .points import fitted_axis
from .seeds import seed_sentence

if TYPE_CHECKING:
    from .result import Analysis


def headline_sentences(an: Analysis) -> list[str]:
    out = []
    ref = an.reference
    if not an.comparisons:
        reasons = [s["reason"] for s in an.caveats.skipped if s["what"] in ("comparisons", "power law vs flops")]
        if an.tuning is not None:
            missing = [c for c in an.tuning.tuning.cells if c.tuned_run_id is None]
            reasons.insert(0, f"{len(missing)} tuned cell(s) have no tuned run yet (reduced-token trials need their "
                              "winner at full tokens: `ebt-scaling plan --extend SWEEP_DIR`)" if missing else
                           "the tuned runs of two architectures do not overlap")
        out.append("No comparison of architectures could be made" + (f": {reasons[0]}" if reasons else
                                                                      " (no finished runs of two architectures)") + ".")
        if an.tuning is not None:
            out.extend(_tuning(an))
        return out
    for cand, comp in an.comparisons.items():
        out.append(estimator_sentence(an, cand))
        frontier = an.frontiers.get(cand)
        on_frontier = frontier is not None and (frontier.efficiency or frontier.slopes is not None)
        if on_frontier:
            out.extend(_frontier(an, cand, frontier))
        rate = comp.rates.get("flops")
        if not isinstance(rate, SlopeComparison):
            out.append(f"{cand} vs {ref}: no FLOP power law ({rate.reason if rate is not None else 'skipped'}).")
            continue
        if on_frontier:
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
                     for c, a in answers.items() if a is not None and a[2] == PER_AXIS]
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


PER_AXIS = "per-axis FLOP power law"
A2_FRONTIER = "Approach 2 frontier"


def estimator_sentence(an: Analysis, cand: str) -> str:
    """Which estimator the answer for one candidate comes from, and why."""
    ref = an.reference
    tuned = " (the tuned runs: each cell's best trial)" if an.tuning is not None else ""
    frontier = an.frontiers.get(cand)
    if frontier is not None:
        missing = "; ".join(f"{ESTIMATORS[k]} missing: {why}" for k, why in frontier.skipped.items())
        if frontier.efficiency:
            used = "; ".join(ESTIMATORS[e] for e in frontier.estimators)
            return (f"Estimator for {cand} vs {ref}: the compute-optimal frontier L*(C) of an isoFLOP sweep{tuned}: "
                    f"{used}" + (f" ({missing})" if missing else "") + ".")
        return (f"Estimator for {cand} vs {ref}: the per-axis power law of final loss against FLOPs through every "
                f"finished run{tuned}, off-optimal sizes included, because this isoFLOP sweep has no frontier yet "
                f"({missing}).")
    axis = (an.data.meta or {}).get("axis") or "parameters"
    return (f"Estimator for {cand} vs {ref}: the per-axis power law of final loss against FLOPs through the finished "
            f"runs{tuned} (a {axis} sweep: each run is one point of the curve).")


def answer(an: Analysis, cand: str) -> tuple[float, list | None, str] | None:
    """The headline's scaling-rate advantage of a candidate: (advantage, interval, where from)."""
    frontier = an.frontiers.get(cand)
    if frontier is not None and frontier.slopes is not None:
        j = frontier.slopes.to_json()
        return j["advantage"], j.get("intervals", {}).get("advantage"), A2_FRONTIER
    comp = an.comparisons.get(cand)
    rate = comp.rates.get("flops") if comp else None
    if isinstance(rate, SlopeComparison):
        j = rate.to_json()
        return j["advantage"], j.get("intervals", {}).get("advantage"), PER_AXIS
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


def answer_text(found: tuple | None) -> str:
    """An ``answer`` in words."""
    if found is None:
        return "no answer"
    return f"{pct(found[0])} {fmt_interval(found[1], 3, pct=True)} ({found[2]})"


def _tuning(an: Analysis) -> list[str]:
    t = an.tuning
    cells = t.tuning.cells
    out = [t.tuning.budget_rule()]
    partial = [c for c in cells if c.n_done < c.n_trials]
    if partial:
        out.append(f"{len(partial)} of {len(cells)} tuned cell(s) are not fully tried (e.g. {partial[0].name} of "
                   f"{partial[0].label}: {partial[0].n_done} of {partial[0].n_trials} trials finished): their best "
                   "trial is the best so far.")
    untuned = t.untuned
    n_tuned = sum(c.tuned_run_id is not None for c in cells)
    n_untuned = sum(c.untuned_run_id is not None for c in cells)
    candidates = list(dict.fromkeys([*an.candidates, *(untuned.candidates if untuned is not None else [])]))
    for cand in candidates:
        tuned_answer = answer(an, cand)
        untuned_answer = answer(untuned, cand) if untuned is not None else None
        out.append(f"{cand} vs {an.reference}, scaling-rate advantage tuned {answer_text(tuned_answer)} vs untuned "
                   f"(the rules' values) {answer_text(untuned_answer)}.")
    if n_tuned != n_untuned:
        out.append(f"The two answers cover different cells: {n_tuned} tuned and {n_untuned} untuned cell(s) have a "
                   "finished run.")
    edges = t.tuning.edge_cells
    if edges:
        shown = "; ".join(f"{c.label} {c.name} ({', '.join(f'{k} {v}' for k, v in c.edges.items())})"
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
    paper_v1, paper_later = fitted_axis("flops").paper_advantage
    return (f"{cand}'s FLOP slope is {pl_c['slope']:.4g} {fmt_interval(pl_c.get('intervals', {}).get('slope'), 4)} "
            f"vs {ref}'s {pl_r['slope']:.4g} {fmt_interval(pl_r.get('intervals', {}).get('slope'), 4)}: "
            f"scaling-rate advantage {pct(ax['advantage'])} "
            f"{fmt_interval(ax.get('intervals', {}).get('advantage'), 3, pct=True)} "
            f"({an.config.ci * 100:g}% paired-bootstrap intervals; the paper reports +{paper_v1}% (v1), "
            f"+{paper_later}% (later revision)).")


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
        out.append("Power-law fits: " + "; ".join(parts)
                   + f" (>1: {cand} needs more; the EBT paper: ≈10× at its scales).")
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
