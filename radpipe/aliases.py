"""The names a registry alias may take, checked one way by the config and by ``radpipe promote``/``rollback``.

MLflow's rule (letters, digits, ``_`` and ``-``) minus the names MLflow reserves (``latest``, ``v1``,
``V2``, ...) and the ``previous-<alias>`` names radpipe keeps for rollback (:mod:`radpipe.registry`).
"""

from __future__ import annotations

import re

ALIAS_PATTERN = re.compile(r"(?!(?i:latest)$)(?![vV]\d+$)[\w-]+")
PREVIOUS_PREFIX = "previous-"


def previous_alias(alias: str) -> str:
    """Where ``alias``'s last version is kept after a promote: what a rollback returns to."""
    return f"{PREVIOUS_PREFIX}{alias}"


def alias_problem(alias: str) -> str:
    """Why ``alias`` cannot be used, in words; ``""`` when it can."""
    if ALIAS_PATTERN.fullmatch(alias) and not alias.startswith(PREVIOUS_PREFIX):
        return ""
    return (
        f"{alias!r} is not a usable alias: letters, digits, '_' and '-' only, not 'latest' nor 'v<number>' "
        f"(reserved by MLflow), not starting with {PREVIOUS_PREFIX!r} (kept by radpipe for rollback)"
    )
