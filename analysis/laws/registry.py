"""Every fit law of the analysis, in report order: registry name -> law. A new law is one
module (see law.py) and one line here; fits.json, the comparisons, the headline, the report
and the plots find it here."""
from __future__ import annotations

from .chinchilla import APPROACH3
from .law import FitLaw
from .power import POWER_LAW
from .saturating import SATURATING

LAWS: dict[str, FitLaw] = {law.name: law for law in (POWER_LAW, SATURATING, APPROACH3)}
