"""Spec fields added after runs were planned: ``x: T = since(default)``.

At its default such a field is left out of the run id (``spec.identity_dict``), so every
run id planned before the field existed stays the same. It lives in its own module
because model_config.py declares such fields and spec.py imports model_config.py.
"""
from __future__ import annotations

from dataclasses import field

# The metadata key that marks a field as added later.
SINCE_DEFAULT = "id_omits_default"


def since(default):
    """A field added later: ``x: T = since(default)``; see SINCE_DEFAULT."""
    return field(default=default, metadata={SINCE_DEFAULT: True})
