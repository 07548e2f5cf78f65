"""Figures drawn without pyplot, rendered as PNG, PDF and SVG, with their text shown as written.

No backend is selected and no global state is changed: a figure is a
``matplotlib.figure.Figure`` with an Agg canvas, and ``savefig`` picks the canvas of each
format (Agg, PDF, SVG) for that one call. So importing or plotting never switches the
backend of a caller (a notebook, a GUI session), and pyplot's figure registry never holds
our figures.

Text is literal: the plots here write no mathtext, and a ``$`` in an architecture or task
label would otherwise start it (an unbalanced expression such as ``$^$`` raises when the
figure is drawn). ``render`` escapes every ``$`` of the titles, axis labels, legends and
annotations just before drawing; tick labels, which matplotlib writes in mathtext itself
(10^k), are left alone.
"""
from __future__ import annotations

import io

FORMATS = ("png", "pdf", "svg")
DPI = 110
# Fixed ids and no dates in the vector formats: the same analysis gives the same files.
_VECTOR_RC = {"svg.hashsalt": "ebt-scaling"}
_NO_DATES = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}


def new_figure(figsize: tuple[float, float]):
    """An empty figure on an Agg canvas, outside pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _literal_texts(fig) -> None:
    """Escape the `$` of every text our plots write (see the module docstring)."""
    texts = list(fig.texts)
    for ax in fig.axes:
        legend = ax.get_legend()
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        if legend is not None:
            texts += [legend.get_title(), *legend.get_texts()]
    for t in texts:
        text = t.get_text()
        if "$" in text:
            t.set_text(text.replace("\\$", "$").replace("$", "\\$"))


def render(fig, formats: tuple[str, ...] = FORMATS) -> dict[str, bytes]:
    """The figure's bytes in each format (laid out tightly, texts literal)."""
    from matplotlib import rc_context

    _literal_texts(fig)
    fig.tight_layout()
    out = {}
    with rc_context(_VECTOR_RC):
        for fmt in formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=DPI, metadata=_NO_DATES.get(fmt))
            out[fmt] = buf.getvalue()
    return out
