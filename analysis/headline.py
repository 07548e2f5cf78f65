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
from .laws.power import POWER_LAW
from .numbers import fmt_interval, fmt_num
from .paper import PAPER_ADVANTAGE

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
    for cand, comp in an.comparisons.items():
        rate = comp.rates.get("flops")
        if not isinstance(rate, SlopeComparison):
            out.append(f"{cand} vs {ref}: no FLOP power law ({rate.reason if rate is not None else 'skipped'}).")
            continue
        out.append(_slopes(an, cand, rate))
        if isinstance(comp.efficiency, Efficiency):
            out.extend(_efficiency(comp.efficiency, ref, cand))
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
