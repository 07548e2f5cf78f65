"""What the analysis report shows of the evaluations: a Table-3-style table and a thinking plot.

Both take, per architecture, a run's ``result.json["evaluations"]`` dict (or the whole
result dict, or a list of them: perplexities are then averaged in log space, i.e. the
geometric mean over runs).
"""
from __future__ import annotations

import math
from pathlib import Path

from ebt_scaling.harness.evaluation.task_grammar import THINKING_PROTOCOLS

# Thinking results recorded before the protocol was: they took the final-landscape protocol.
LEGACY_THINKING_PROTOCOL = "final_landscape"

# Table 3 of the paper (arXiv v1): perplexity, Transformer++ vs EBT.
PAPER_TABLE3 = {
    "pretrain": ("Pretraining (held-out)", 31.36, 33.43),
    "gsm8k": ("GSM8K", 49.6, 43.3),
    "squad": ("SQuAD", 52.3, 53.1),
    "elementary_math_qa": ("BIG-bench Elementary Math QA", 79.8, 72.6),
    "dyck": ("BIG-bench Dyck languages", 131.5, 125.3),
}
_ORDER = list(PAPER_TABLE3)


def paper_row(label: str) -> tuple[str | None, bool]:
    """(key of the paper row a task label corresponds to, whether it is only a proxy)."""
    if label == "pretrain":
        return "pretrain", False
    if label.startswith("gsm8k"):
        return "gsm8k", False
    if label.startswith("squad"):
        return "squad", False
    if "elementary_math_qa" in label:
        return "elementary_math_qa", False
    if label.startswith("arithmetic"):
        return "elementary_math_qa", True  # generated arithmetic: a stand-in, not the same set
    if "dyck" in label:
        return "dyck", not label.startswith("bigbench")
    return None, False


def _evaluations(run) -> dict:
    return (run.get("evaluations") or {}) if isinstance(run, dict) and "evaluations" in run else (run or {})


def _runs(runs) -> list[dict]:
    if runs is None:
        return []
    return [_evaluations(r) for r in (runs if isinstance(runs, (list, tuple)) else [runs])]


def _geo_mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if len(values) == 1:
        return values[0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _task_ppl(runs: list[dict], label: str) -> float | None:
    return _geo_mean([(e.get("tasks") or {}).get(label, {}).get("ppl") for e in runs])


def _thinking_gain(runs: list[dict], label: str) -> float | None:
    gains = [((e.get("thinking") or {}).get("tasks") or {}).get(label, {}).get("gain") for e in runs]
    gains = [g for g in gains if g is not None]
    return sum(gains) / len(gains) if gains else None


def _protocol(result: dict) -> str:
    return result.get("protocol", LEGACY_THINKING_PROTOCOL)


def thinking_protocols(runs) -> list[tuple[str, float | None]]:
    """The distinct (protocol, Langevin curve sigma) of the thinking results of `runs`."""
    seen = []
    for e in _runs(runs):
        thinking = e.get("thinking") or {}
        if thinking.get("tasks") and (key := (_protocol(thinking), thinking.get("sigma"))) not in seen:
            seen.append(key)
    return seen


def thinking_protocol_sentence(runs) -> str:
    """One sentence stating the thinking protocol(s) the runs' results used."""
    used = thinking_protocols(runs)
    if not used:
        return "No thinking results: no thinking protocol to state."
    parts = [f"{p} ({THINKING_PROTOCOLS.get(p, 'unknown protocol')}; Langevin curve σ={sigma})" for p, sigma in used]
    return ("Thinking protocol: " + "; ".join(parts) + ". The trained point and best-of-N take the validation "
            "protocol (the trained steps plus the most extra steps, with the trained Langevin noise).")


def _steps_label(result: dict) -> str:
    if _protocol(result) == "paper":
        return f"refinement steps (n per landscape x K={result.get('landscapes', '?')})"
    return "refinement steps (extra ones on the last landscape)"


def table3(transformer, ebt) -> list[dict]:
    """Rows = pretraining + each downstream task evaluated in either architecture's runs.

    Each row: task (label), row (display name), tpp_ppl, ebt_ppl, ebt_vs_tpp (relative
    difference, negative = EBT better), thinking_gain (EBT's relative gain from more steps /
    Langevin / BoN, measured on the thinking subset) and ebt_thinking_ppl = ebt_ppl x
    (1 - thinking_gain), paper_tpp, paper_ebt, proxy (True where the task only stands in
    for the paper's set, e.g. generated Dyck for BIG-bench Dyck).
    """
    tpp_runs, ebt_runs = _runs(transformer), _runs(ebt)
    labels: list[str] = []
    for e in tpp_runs + ebt_runs:
        for label, r in (e.get("tasks") or {}).items():
            if label not in labels and "error" not in r:
                labels.append(label)
    labels.sort(key=lambda lb: (_ORDER.index(paper_row(lb)[0]) if paper_row(lb)[0] else len(_ORDER), lb))
    rows = []
    for label in labels:
        key, proxy = paper_row(label)
        name, paper_tpp, paper_ebt = PAPER_TABLE3.get(key, (label, None, None))
        if proxy or key is None:
            name = f"{label} (generated; paper row: {name})" if key else label
        tpp, eb = _task_ppl(tpp_runs, label), _task_ppl(ebt_runs, label)
        gain = _thinking_gain(ebt_runs, label)
        rows.append({"task": label, "row": name, "tpp_ppl": tpp, "ebt_ppl": eb,
                     "ebt_vs_tpp": (eb - tpp) / tpp if tpp and eb else None, "thinking_gain": gain,
                     "ebt_thinking_ppl": eb * (1 - gain) if eb is not None and gain is not None else None,
                     "paper_tpp": paper_tpp, "paper_ebt": paper_ebt, "proxy": proxy})
    return rows


def format_table3(rows: list[dict]) -> str:
    """Markdown table of table3() rows."""
    def f(v, d=2):
        return "-" if v is None else f"{v:.{d}f}" if abs(v) < 1e5 else f"{v:.3g}"

    lines = ["| task | T++ ppl | EBT ppl | EBT vs T++ | thinking gain | EBT + thinking | paper T++ | paper EBT |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rel = "-" if r["ebt_vs_tpp"] is None else f"{r['ebt_vs_tpp'] * 100:+.1f}%" if abs(r["ebt_vs_tpp"]) < 1e3 \
            else f"x{1 + r['ebt_vs_tpp']:.3g}"
        gain = "-" if r["thinking_gain"] is None else f"{r['thinking_gain'] * 100:.1f}%"
        lines.append(f"| {r['row']} | {f(r['tpp_ppl'])} | {f(r['ebt_ppl'])} | {rel} | {gain} | {f(r['ebt_thinking_ppl'])} "
                     f"| {f(r['paper_tpp'])} | {f(r['paper_ebt'])} |")
    return "\n".join(lines)


def plot_thinking(transformer, ebt, path: str | Path, tasks: list[str] | None = None) -> Path:
    """PNG at `path`, and PDF and SVG beside it: per task, perplexity against refinement
    steps (EBT without / with Langevin noise, Transformer++ flat) and best-of-N bars; a
    last panel plots the thinking gain against distribution shift (task ppl / pretraining
    ppl). The suptitle and the step axes name the thinking protocol. Takes one run per
    architecture (the first of a list)."""
    from .figures import new_figure, render

    tpp = _runs(transformer)[0] if _runs(transformer) else {}
    eb = _runs(ebt)[0] if _runs(ebt) else {}
    think_e = (eb.get("thinking") or {}).get("tasks") or {}
    think_t = (tpp.get("thinking") or {}).get("tasks") or {}
    labels = tasks or list(think_e) or list(think_t)
    labels = sorted(labels, key=lambda lb: (lb != "pretrain", labels.index(lb)))  # in-distribution first
    if not labels:
        raise ValueError("no thinking results to plot: evaluate with the 'thinking' task")
    cols = len(labels) + 1
    fig = new_figure((3.6 * cols, 6.4))
    axes = fig.subplots(2, cols, squeeze=False)
    for j, label in enumerate(labels):
        top, bottom = axes[0][j], axes[1][j]
        e, t = think_e.get(label), think_t.get(label)
        if e:
            top.plot(e["steps"], e["ppl"], "o-", color="C1", label="EBT")
            top.plot(e["steps"], e["ppl_langevin"], "s--", color="C3", label=f"EBT + Langevin (σ={e.get('sigma')})")
            top.axvline(e["trained_steps"], color="0.6", lw=0.8, ls=":")
            ns = list(e["bon"])
            bottom.bar(range(len(ns)), [e["bon"][n] for n in ns], color="C1", label="EBT best-of-N")
            bottom.set_xticks(range(len(ns)), [f"N={n}" for n in ns])
            bottom.set_xlabel(f"best-of-N starts ({e.get('trained_steps', '?')} validation steps)")
        if t:
            ppl = t["ppl_trained"]
            top.axhline(ppl, color="C0", ls="-", lw=1.2, label="Transformer++")
            bottom.axhline(ppl, color="C0", lw=1.2, label="Transformer++")
        if e:  # bars start near the smallest value shown, so BoN differences stay visible
            values = list(e["bon"].values()) + ([t["ppl_trained"]] if t else [])
            bottom.set_ylim(min(values) * 0.95, max(values) * 1.03)
        top.set_title(label)
        top.set_xlabel(_steps_label(e or t or {}))
        top.set_ylabel("perplexity")
        bottom.set_ylabel("perplexity")
        if j == 0:
            top.legend(fontsize=7)
            bottom.legend(fontsize=7)
    ax = axes[0][-1]
    pts = [(r.get("shift"), r.get("gain")) for r in think_e.values() if r.get("shift") is not None]
    if pts:
        ax.scatter([p[0] for p in pts], [100 * p[1] for p in pts], color="C1")
        for (label, r) in think_e.items():
            if r.get("shift") is not None:
                ax.annotate(label, (r["shift"], 100 * r["gain"]), fontsize=7)
    ax.set_xlabel("distribution shift (task ppl / pretrain ppl)")
    ax.set_ylabel("thinking gain (%)")
    ax.set_title("gain vs shift (EBT)")
    axes[1][-1].axis("off")
    auc = eb.get("energy_auroc")
    axes[1][-1].text(0.02, 0.5, f"energy AUROC\n(correct vs random token): {auc:.3f}" if auc is not None
                     else "energy AUROC: -", fontsize=9, va="center")
    used = thinking_protocols(eb) or thinking_protocols(tpp)
    fig.suptitle("thinking protocol: " + "; ".join(f"{p} ({THINKING_PROTOCOLS.get(p, '?')})" for p, _ in used),
                 fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for fmt, data in render(fig).items():
        (path if fmt == "png" else path.with_suffix(f".{fmt}")).write_bytes(data)
    return path
