"""Write the analysis of a sweep: fits.json, runs.csv, plots (PNG, PDF, SVG), report.md and a
self-contained report.html (images embedded as base64 data URIs, inline CSS, no external
references). Every file is written atomically (harness/contract/run_dir.atomic_write_*).

The report is built once as a list of blocks (heading, paragraph, list, table, image,
preformatted text) and rendered to both Markdown and HTML. Text that came from the sweep
(labels, notes, paths) is shown as written in both: HTML escapes it, and Markdown, which
passes raw HTML through, gets every ``<`` that could open a tag as ``&lt;``.

fits.json: the Analysis's ``result``, JSON-safe (contract/formatting.jsonable): NaN becomes
null and +/-infinity the strings "inf" / "-inf" (an infinite crossover bound: no crossing
below the budget).

Each fit law has its table (laws/law.py ``rows``): the compared ones (loss against FLOPs)
with the loss plots, the others with the compute-optimal approaches; every compared law
gets a column of the FLOP multiplier and a row of the crossovers.
"""
from __future__ import annotations

import base64
import html
import re
import tempfile
from pathlib import Path

from ebt_scaling.harness.contract.formatting import as_number, fmt_interval, fmt_num, jsonable, pct
from ebt_scaling.harness.contract.protocol import reference_summary
from ebt_scaling.harness.contract.run_dir import atomic_write_bytes, atomic_write_json, atomic_write_text

from .evaluations import plot_thinking, table3, thinking_protocol_sentence
from .headline import answer, answer_text
from .laws.law import FitLaw
from .laws.power import POWER_LAW
from .plots import all_plots
from .points import fitted_axis
from .result import Analysis

# The paper's headline numbers (docs/ebt.md, arXiv 2507.02092 v1) shown beside ours.
PAPER_HEADLINES = [
    "Scaling-rate advantage of EBT over Transformer++ (log-log slope ratio - 1), v1: data 35.98%, batch size "
    "28.46%, depth 5.29%, parameters 2.91%, FLOPs 2.92%, embedding dim 0.02%; a later revision: 8.97% for FLOPs "
    "and parameters. Single seed, no error bars, 4-5 points per axis.",
    "At every measured FLOP budget EBT's perplexity was worse (about 10x more FLOPs for equal perplexity); only its "
    "slope was steeper. Whether there is a crossover budget was left open.",
    "EBT / Transformer++ FLOPs per training step measured with FlopCounterMode on the reference code: 5.29 (xxs), "
    "6.55 (small); the paper's approximation 6.66 at K = 2.",
    "Table 3 perplexity, Transformer++ vs EBT: pretraining 31.36 vs 33.43; GSM8K 49.6 vs 43.3; SQuAD 52.3 vs 53.1; "
    "BIG-bench Elementary Math QA 79.8 vs 72.6; BIG-bench Dyck languages 131.5 vs 125.3.",
]

# ---------------------------------------------------------------------------- blocks

_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")   # what CommonMark reads as raw HTML or an autolink


def _md(text: str) -> str:
    """Text for Markdown, shown as written: no raw HTML from labels or notes."""
    return _TAG_START.sub("&lt;", text)


class Doc:
    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, headers: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", headers, [[("" if c is None else str(c)) for c in r] for r in rows]))

    def img(self, title: str, filename: str, png: bytes) -> None:
        self.blocks.append(("img", title, filename, png))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    # -- renderers
    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                out.append("#" * b[1] + " " + _md(b[2]))
            elif kind == "p":
                out.append(_md(b[1]))
            elif kind == "ul":
                out.append("\n".join(f"- {_md(i)}" for i in b[1]))
            elif kind == "table":
                esc = lambda c: _md(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
                lines = ["| " + " | ".join(esc(h) for h in b[1]) + " |", "|" + "---|" * len(b[1])]
                lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in b[2]]
                out.append("\n".join(lines))
            elif kind == "img":
                out.append(f"![{_md(b[1])}]({b[2]})")
            elif kind == "pre":
                out.append("```\n" + b[1] + "\n```")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        body = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                body.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif kind == "p":
                body.append(f"<p>{e(b[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{e(h)}</th>" for h in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(b[3]).decode("ascii")
                body.append(f'<figure><img alt="{e(b[1])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{e(b[1])} ({e(b[2])})</figcaption></figure>")
            elif kind == "pre":
                body.append(f"<pre>{e(b[1])}</pre>")
        css = ("body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;"
               "margin:2em auto;padding:0 1em;color:#222;line-height:1.45}"
               "table{border-collapse:collapse;margin:0.6em 0;font-size:0.86em}"
               "th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}"
               "th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}"
               "figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}"
               "figcaption{font-size:0.85em;color:#555}pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}"
               "h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:0.2em;margin-top:1.6em}")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
                f"<style>{css}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ---------------------------------------------------------------------------- content

def _iv(entry: dict, key: str, digits: int = 3, percent: bool = False) -> str:
    return fmt_interval((entry.get("intervals") or {}).get(key), digits, percent)


def _setup(doc: Doc, an: Analysis, sweep_dir: str) -> None:
    r = an.result
    cfg = r["config"]
    sweep = r.get("sweep") or {}
    runs = r["runs"]
    status = ", ".join(f"{k} {v}" for k, v in runs["by_status"].items())
    items = [
        f"Sweep: {sweep.get('name') or Path(sweep_dir).name} ({sweep_dir}); axis {sweep.get('axis') or 'n/a'}, "
        f"pairing {sweep.get('pairing') or 'n/a'}.",
        f"Runs: {runs['total']} ({status}); {runs['fitted']} fitted (status done with a final loss).",
        f"Loss: {r['loss']}.",
        f"FLOP convention: {r['flop_convention']} (selectable with --convention full|paper; the sweep stated its "
        f"budgets in {sweep.get('convention') or 'n/a'}). full = every matmul a training step executes "
        "(vocabulary-sized ones included); paper = 6N (Transformer++) and 20KN (EBT), N non-embedding.",
        f"N (parameters): {cfg['params']} parameter count ({cfg['params_column']}); D: training tokens seen.",
        f"Uncertainty: paired bootstrap, {r['bootstrap']['n_resamples']} resamples (seed {cfg['seed']}) of "
        f"{r['bootstrap']['n_units']} matched units ({r['bootstrap']['unit']}); {cfg['ci'] * 100:g}% percentile "
        "intervals in brackets.",
        f"Reference: {r.get('reference') or 'none'}; compared: {', '.join(r.get('candidates') or []) or 'none'}. "
        f"Crossovers searched up to {cfg['budget']:.3g} FLOPs.",
    ]
    if an.frontiers:
        items.append("isoFLOP sweep: the answer comes from the compute-optimal frontier (section \"The frontier\"); "
                     "the per-axis power laws below fit every run, off-optimal sizes included.")
    items.append(_protocol_sentence(an))
    for cand, ratio in (r.get("flops_per_token_ratio") or {}).items():
        items.append(f"{cand} / {r['reference']} training FLOPs per token ({r['flop_convention']}): median "
                     f"{ratio['median']:.3g} (range {ratio['min']:.3g}-{ratio['max']:.3g} over {ratio['n_units']} "
                     "matched units; paper: 5.29-6.66).")
    doc.ul(items)


def _protocol_sentence(an: Analysis) -> str:
    """Which training protocol (harness/contract/protocol.py) each label's fitted runs used."""
    runs = an.points
    col = runs["protocol"] if "protocol" in runs else None
    used = {lb: " / ".join(sorted(str(v) for v in col[runs["arch_label"] == lb].dropna().unique())) or "unknown"
            for lb in an.labels} if col is not None else {lb: "unknown" for lb in an.labels}
    return ("Protocol: " + "; ".join(f"{lb} {v}" for lb, v in used.items()) + ". project = this project's "
            "defaults; reference = the reference code's setup, what `protocol: reference` fills in ("
            + reference_summary() + "; docs/ebt.md).")


def _frontier(doc: Doc, an: Analysis) -> None:
    """The isoFLOP answer: per candidate and estimator, the multiplier at the largest
    reference run and the crossover; Approach 2's frontier slopes."""
    rows = []
    for cand, f in an.result.get("frontier", {}).items():
        slopes = f.get("approach2_slopes")
        if slopes:
            rows.append([cand, "Approach 2: L*(C) slopes", f"{slopes['slope_candidate']:.4g} vs "
                         f"{slopes['slope_reference']:.4g}; advantage {pct(slopes['advantage'])} "
                         f"{_iv(slopes, 'advantage', 3, percent=True)}"])
        for name in f["estimators"]:
            row = next((m for m in f[name]["multiplier"] if m["largest_reference_run"]), None)
            c = f[name]["crossover"].get(name, {})
            where = f"{c['compute']:.3g}" if c.get("compute") else f"none below {f[name]['crossover']['budget']:.3g}"
            if row is not None:
                rows.append([cand, f"{name}: multiplier at {row['compute']:.3g} FLOPs",
                             f"{fmt_num(row[name])} {fmt_interval(row.get(f'{name}_interval'))}"])
            rows.append([cand, f"{name}: crossover", f"{where} {fmt_interval(c.get('interval'))}"])
    if rows:
        doc.h(2, "The frontier")
        doc.p("The compute-optimal frontier L*(C) of each label: Approach 2 fits a power law through the isoFLOP "
              "minima; Approach 3's L(N, D) is minimised at each compute, restated in the sweep's FLOPs with each "
              "label's median FLOPs per parameter-token (q: " + ", ".join(
                  f"{lb} {q:.3g}" for f in an.result["frontier"].values()
                  for lb, q in f["flops_per_param_token"].items()) + ").")
        doc.table(["candidate", "estimate", "value"], rows)


def _tuning(doc: Doc, an: Analysis) -> None:
    if an.tuning is None:
        return
    t = an.tuning.tuning
    doc.h(2, "Tuning")
    doc.p(t.budget_rule() + " The tuned answer fits each cell's best trial by final held-out loss; the untuned "
          "answer the trials at every factor 1 (what the rules alone plan).")
    rows = []
    for c in t.cells:
        best = ", ".join(f"{k}×{v:g}" for k, v in (c.best_factors or {}).items()) or "-"
        edges = ", ".join(f"{k} at the {side} edge" for k, side in c.edges.items())
        rows.append([c.label, c.name, c.seed, f"{c.n_done}/{c.n_trials}", best,
                     "-" if c.best_loss is None else f"{c.best_loss:.4f}",
                     "-" if c.untuned_loss is None else f"{c.untuned_loss:.4f}",
                     "-" if c.best_lr is None else f"{c.best_lr:.3g}", edges])
    doc.table(["label", "cell", "seed", "trials done", "best factors", "best loss", "untuned loss", "best LR",
               "edge"], rows)
    untuned = an.tuning.untuned
    candidates = list(dict.fromkeys([*an.candidates, *(untuned.candidates if untuned is not None else [])]))
    side = [[f"{cand} vs {an.reference}", answer_text(answer(an, cand)),
             answer_text(answer(untuned, cand) if untuned is not None else None)] for cand in candidates]
    if side:
        doc.p("Tuned and untuned answers side by side (scaling-rate advantage, b_cand / b_ref - 1, and the "
              "estimator each used):")
        doc.table(["comparison", "tuned", "untuned"], side)
    doc.ul(["LR(N) rule, " + r.sentence() for r in t.lr_rules.values()])


def _paper_table(doc: Doc, an: Analysis) -> None:
    r = an.result
    rows = []
    for cand, comp in r.get("comparisons", {}).items():
        for axis, e in comp["axes"].items():
            shown = fitted_axis(axis)
            name = shown.paper_name or axis
            v1, later = shown.paper_advantage or (None, None)
            ours = f"{pct(e.get('advantage'))} {_iv(e, 'advantage', 3, percent=True)}" if e.get("status") == "ok" else \
                f"skipped: {e.get('reason')}"
            rows.append([cand, name, ours, f"+{v1}%" if v1 is not None else "-",
                         f"+{later}%" if later is not None else "-"])
    if rows:
        doc.table(["candidate", "axis (paper's name)", "ours: advantage b_cand/b_ref - 1", "paper v1",
                   "paper, later revision"], rows)
    doc.ul(PAPER_HEADLINES)


def _law_table(doc: Doc, an: Analysis, law: FitLaw) -> None:
    doc.h(3, law.title)
    doc.table(["label", *law.headers], [row for lb, fit in an.laws[law].items() for row in law.rows(lb, fit)])


def _scaling_rates(doc: Doc, an: Analysis) -> None:
    r = an.result
    rows = []
    for cand, comp in r.get("comparisons", {}).items():
        for axis, e in comp["axes"].items():
            if e.get("status") != "ok":
                continue
            rows.append([f"{cand} vs {comp['reference']}", fitted_axis(axis).unit,
                         f"{fmt_num(e['slope_diff'], 4)} {_iv(e, 'slope_diff', 4)}",
                         f"{fmt_num(e['slope_ratio'], 4)} {_iv(e, 'slope_ratio', 4)}",
                         f"{pct(e['advantage'])} {_iv(e, 'advantage', 3, percent=True)}", e.get("warning", "")])
    if rows:
        doc.p("Scaling-rate comparison (slopes of the per-axis power laws; advantage > 0: the candidate's loss "
              "falls faster):")
        doc.table(["comparison", "axis", "slope difference b_cand - b_ref", "slope ratio", "advantage", "note"], rows)


def _efficiency(doc: Doc, an: Analysis) -> None:
    r = an.result
    compared = [law for law in an.laws if law.compared]
    for cand, comp in r.get("comparisons", {}).items():
        mult = comp.get("multiplier")
        cross = comp.get("crossover", {})
        if not mult:
            doc.p(f"{cand}: {cross.get('reason', 'no FLOP multiplier')}")
            continue
        rows = []
        for row in mult:
            rows.append([f"{row['compute']:.3g}" + (" (largest reference run)" if row["largest_reference_run"] else ""),
                         *(f"{fmt_num(row[law.name])} {fmt_interval(row.get(f'{law.name}_interval'))}"
                           if law.name in row else "-" for law in compared)])
        doc.p(f"{cand}: compute it needs to reach {comp['reference']}'s loss, as a multiple of {comp['reference']}'s "
              "compute (> 1: more; ∞: the fitted curve never reaches that loss):")
        doc.table(["compute C (FLOPs)", *(f"multiplier ({law.plural})" for law in compared)], rows)
        crows = []
        for law in compared:
            c = cross.get(law.name)
            if not c:
                continue
            where = f"{c['compute']:.3g}" if c.get("compute") else f"none below {cross['budget']:.3g}"
            frac = c.get("fraction_crossing")
            crows.append([law.name.replace("_", " "), where, fmt_interval(c.get("interval")),
                          "-" if frac is None else f"{frac * 100:.0f}%", c.get("message", "")])
        if crows:
            doc.table(["fitted curves", "crossover compute (FLOPs)", "interval", "resamples with a crossing",
                       "statement"], crows)


def _approaches(doc: Doc, an: Analysis) -> None:
    r = an.result
    doc.h(3, "Approach 1: running-minimum frontier of the cooled-down final points")
    rows = []
    for lb, e in r.get("approach1", {}).items():
        if e.get("status") != "ok":
            rows.append([lb, "-", "-", "-", f"skipped: {e['reason']}"])
            continue
        nopt = (f"{fmt_num(e['n_opt_exponent'])} {_iv(e, 'n_opt_exponent')}" if "n_opt_exponent" in e
                else e.get("n_opt_note", ""))
        rows.append([lb, e["n_runs"], f"{fmt_num(e['slope'], 4)} {_iv(e, 'slope', 4)}", nopt,
                     f"{e['n_frontier']} of {e['n_points']} points on the frontier"
                     + (f"; {e['n_cooldown_branches']} of the runs are WSD cooldown branches"
                        if e["n_cooldown_branches"] else "")])
    doc.table(["label", "runs", "frontier slope (L ∝ C^b)", "N_opt exponent (N on the frontier ∝ C^a)", "note"], rows)
    doc.ul([f"{c} vs {comp['reference']}: Approach 1 frontier-slope advantage {pct(comp['envelope']['advantage'])} "
            f"{_iv(comp['envelope'], 'advantage', 3, percent=True)}"
            for c, comp in r.get("comparisons", {}).items() if "envelope" in comp])
    doc.h(3, "Approach 2: isoFLOP minima")
    rows = []
    for lb, e in r.get("approach2", {}).items():
        if e.get("status") != "ok":
            rows.append([lb, "-", "-", "-", f"skipped: {e['reason']}"])
            continue
        for b in e["budgets"]:
            if "dropped" in b:
                rows.append([lb, f"{b['compute']:.3g}", "-", "-", f"dropped: {b['dropped']}"])
            else:
                iv = fmt_interval(b.get("n_opt_interval"))
                rows.append([lb, f"{b['compute']:.3g}", f"{b['n_opt']:.4g} {iv}", f"{b['loss_opt']:.4g}",
                             f"interval {b['n_opt_interval_note']}" if b.get("n_opt_interval_note") else ""])
    doc.table(["label", "budget C (FLOPs)", "N* (parameters)", "loss at N*", "note"], rows)
    doc.p("N* is the minimum of the parabola through the lowest-loss size and its two neighbours (in log N); "
          "budgets whose lowest loss is at the smallest or largest size are dropped, and so are such resamples: "
          "the intervals are conditional on an interior minimum (narrower than unconditional ones). Its interval comes from the "
          "unit bootstrap: a unit holds every seed of a size at a budget, so it reflects which sizes are drawn, "
          "not seed noise; the exponent's interval reflects the scatter between budgets.")
    items = []
    for lb, e in r.get("approach2", {}).items():
        if e.get("status") == "ok":
            if "exponent" in e:
                items.append(f"{lb}: N* ∝ C^{e['exponent']:.3f} {_iv(e, 'exponent')} over {e['n_budgets']} budgets "
                             f"({e['mode']})" + (f"; {e['warning']}" if e.get("warning") else "")
                             + (f"; interval {e['interval_note']}" if e.get("interval_note") else ""))
            else:
                items.append(f"{lb}: {e.get('exponent_note')}")
    doc.ul(items)


def _evaluations(doc: Doc, an: Analysis, out_dir: Path, written: list[str]) -> None:
    doc.h(2, "Downstream evaluations and EBT thinking")
    evals = an.data.evaluations
    if not evals:
        doc.p("No run has evaluations in result.json (run `ebt-scaling eval SWEEP_DIR`); nothing to show.")
        return
    runs = an.data.runs
    ref = an.reference
    if ref is None:
        doc.p("No reference label: evaluations not compared.")
        return
    for cand in an.candidates:
        both = runs[runs["run_id"].isin(evals) & runs["arch_label"].isin([ref, cand])]
        units = [u for u, g in both.groupby("unit") if set(g["arch_label"]) >= {ref, cand}]
        if not units:
            doc.p(f"{cand} vs {ref}: no matched unit with evaluations in both.")
            continue
        sub = both[both["unit"].isin(units)]
        unit = sub.sort_values(an.result["config"]["params_column"]).iloc[-1]["unit"]
        pick = sub[sub["unit"] == unit]
        tpp = [an.data.results[i] for i in pick.loc[pick["arch_label"] == ref, "run_id"]]
        ebt = [an.data.results[i] for i in pick.loc[pick["arch_label"] == cand, "run_id"]]
        doc.p(f"{cand} vs {ref} at the largest matched unit with evaluations ({unit}; {len(tpp)} + {len(ebt)} runs, "
              "perplexities geometric-meaned over seeds):")
        try:
            rows = table3(tpp, ebt)
            doc.table(["task", f"{ref} ppl", f"{cand} ppl", f"{cand} vs {ref}", f"{cand} + thinking", "paper T++",
                       "paper EBT"],
                      [[x["row"], fmt_num(x.get("tpp_ppl"), 4), fmt_num(x.get("ebt_ppl"), 4),
                        pct(x.get("ebt_vs_tpp")), fmt_num(x.get("ebt_thinking_ppl"), 4),
                        fmt_num(x.get("paper_tpp"), 4), fmt_num(x.get("paper_ebt"), 4)] for x in rows])
        except Exception as exc:  # the table builder belongs to another module: report, do not fail
            doc.p(f"Table 3 could not be built: {type(exc).__name__}: {exc}")
        doc.p(thinking_protocol_sentence(ebt))  # as the results record it, so old runs are labelled right
        try:
            name = f"thinking_{_slug(cand)}"
            with tempfile.TemporaryDirectory() as tmp:
                plot_thinking(tpp, ebt, Path(tmp) / "thinking.png")
                for drawn in sorted(Path(tmp).iterdir()):   # the PNG and its PDF and SVG
                    atomic_write_bytes(out_dir / f"{name}{drawn.suffix}", drawn.read_bytes())
                    written.append(f"{name}{drawn.suffix}")
            doc.img(f"EBT thinking: {cand} (more refinement steps, best-of-N)", f"{name}.png",
                    (out_dir / f"{name}.png").read_bytes())
        except ValueError as exc:
            doc.p(f"No thinking plot: {exc}")
        except Exception as exc:
            doc.p(f"Thinking plot failed: {type(exc).__name__}: {exc}")


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in s).strip("_") or "x"


def _runs_tables(doc: Doc, an: Analysis) -> None:
    r = an.result
    conv = an.config.convention
    ncol = r["config"]["params_column"]
    excluded = r["runs"]["excluded"]
    doc.h(2, "Runs not fitted (failed, diverged, cancelled, unfinished, missing)")
    if excluded:
        doc.table(["run id", "label", "status", "step / total", "note"],
                  [[e["run_id"], e.get("arch_label"), e["status"],
                    f"{e.get('step') if e.get('step') is not None else '-'} / "
                    f"{e.get('total_steps') if e.get('total_steps') is not None else '-'}", e.get("note", "")]
                   for e in excluded])
    else:
        doc.p("None: every run finished and was fitted.")
    doc.h(2, "All runs")
    runs = an.all_runs.copy()   # a tuned sweep: every trial, not only those the answer fits
    tuned = an.tuning is not None
    sort_cols = [c for c in ("arch_label", ncol, "tokens_planned", "seed", "trial", "run_id") if c in runs]
    runs = runs.sort_values(sort_cols, kind="stable", na_position="last")
    rows = []
    for _, x in runs.iterrows():
        trial = [x.get("trial") if isinstance(x.get("trial"), str) else ""] if tuned else []
        rows.append([x["run_id"], x.get("arch_label"), x.get("size"), x.get("seed"), *trial, x["status"],
                     fmt_num(as_number(x.get(ncol)), 4), fmt_num(as_number(x.get("tokens")), 4),
                     fmt_num(as_number(x.get(f"flops_{conv}")), 4), fmt_num(as_number(x.get("val_loss")), 5),
                     x.get("note") or ""])
    doc.table(["run id", "label", "size", "seed", *(["trial"] if tuned else []), "status",
               f"N ({r['config']['params']})", "tokens", f"FLOPs ({conv})", "final val loss", "note"], rows)


def build_report(an: Analysis, out_dir: str | Path, sweep_dir: str | Path) -> dict:
    """Write every output into out_dir; returns {"report_md", "report_html", "fits_json", "files"}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    r = an.result
    written: list[str] = []
    doc = Doc()
    name = (r.get("sweep") or {}).get("name") or Path(sweep_dir).name
    title = f"EBT vs Transformer++ scaling: {name}"
    plots = all_plots(an)
    by_name = {p.name: p for p in plots}
    for plot in plots:
        for fmt, fname in plot.filenames().items():
            atomic_write_bytes(out_dir / fname, plot.files[fmt])
            written.append(fname)

    def show(fname: str) -> None:
        if fname in by_name:
            doc.img(by_name[fname].title, fname, by_name[fname].png)

    doc.h(1, title)
    doc.h(2, "Answer")
    doc.ul(r.get("headline") or ["No fits."])
    doc.h(2, "Setup")
    _setup(doc, an, str(sweep_dir))
    _frontier(doc, an)
    _tuning(doc, an)
    show("tuning.png")
    doc.h(2, "Ours beside the paper")
    _paper_table(doc, an)
    doc.h(2, "Loss against compute, parameters and tokens")
    show("loss_vs_flops.png")
    for law in an.laws:
        if not law.compared:
            continue
        _law_table(doc, an, law)
        if law is POWER_LAW:   # its slopes are the scaling rates, and it is the one law fitted on every axis
            _scaling_rates(doc, an)
            show("loss_vs_params.png")
            show("loss_vs_tokens.png")
            for fname in by_name:
                if fname.startswith("loss_vs_") and fname not in ("loss_vs_flops.png", "loss_vs_params.png",
                                                                   "loss_vs_tokens.png"):
                    show(fname)
    doc.h(2, "Efficiency: FLOP multiplier and crossover")
    show("flop_multiplier.png")
    _efficiency(doc, an)
    doc.h(2, "Compute-optimal scaling (Chinchilla Approaches 1-3)")
    _approaches(doc, an)
    for law in an.laws:
        if not law.compared:
            _law_table(doc, an, law)
    show("envelope.png")
    show("isoflop.png")
    _evaluations(doc, an, out_dir, written)
    _runs_tables(doc, an)
    doc.h(2, "Skipped analyses and warnings")
    doc.ul([f"{s['what']}" + (f" ({s['label']})" if s.get("label") else "") + f": {s['reason']}"
            for s in r.get("skipped", [])] or ["No analysis was skipped."])
    doc.ul([f"warning: {w}" for w in r.get("warnings", [])])
    doc.p("Regenerate with: ebt-scaling analyze SWEEP_DIR --convention "
          f"{an.config.convention} --bootstrap {an.config.bootstrap} --seed {an.config.seed}. Files: fits.json (all "
          "numbers), runs.csv (the run table), report.md, report.html (self-contained) and the plots (PNG, "
          "with PDF and SVG beside each).")

    fits_path = out_dir / "fits.json"
    atomic_write_json(fits_path, jsonable(r))
    cols = [c for c in an.all_runs.columns if c != "path"]
    atomic_write_text(out_dir / "runs.csv", an.all_runs[cols].to_csv(index=False))
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md_path, doc.markdown())
    atomic_write_text(html_path, doc.html(title))
    written += ["fits.json", "runs.csv", "report.md", "report.html"]
    return {"report_md": str(md_path), "report_html": str(html_path), "fits_json": str(fits_path), "files": written}
