"""Level names as logging agents and libraries spell them, folded into our five.

Our own API takes the five names and a few aliases (shared/model.py, `Level.parse`);
agents ship whatever their sources wrote: syslog's severities, Go's and Rust's short
forms, Loki's `detected_level`. One table serves every translated protocol (Loki push,
NDJSON), so a name means the same level whichever way it arrived.
"""

from __future__ import annotations

from shared.model import Level

_SPELLINGS: dict[Level, tuple[str, ...]] = {
    Level.DEBUG: ("trace", "trc", "debug", "dbg", "dbug", "verbose", "finest", "finer", "fine"),
    Level.INFO: ("info", "inf", "information", "informational", "notice", "log", "config"),
    Level.WARN: ("warn", "warning", "wrn"),
    Level.ERROR: ("error", "err", "eror", "severe"),
    Level.FATAL: ("fatal", "critical", "crit", "panic", "alert", "emerg", "emergency", "ftl"),
}
# Lower and upper case as they are, so that the usual spellings need no folding.
_BY_NAME: dict[str, str] = {
    variant: level.name
    for level, spellings in _SPELLINGS.items()
    for spelling in spellings
    for variant in (spelling, spelling.upper())
}


def level_name(text: str) -> str | None:
    """One of DEBUG, INFO, WARN, ERROR, FATAL for a level name in any case; None when
    the name is not one we know (the caller decides: refuse, or keep it as metadata)."""
    name = _BY_NAME.get(text)
    if name is None:
        name = _BY_NAME.get(text.strip().lower())
    return name
