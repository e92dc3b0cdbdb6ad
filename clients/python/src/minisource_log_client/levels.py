"""The service's five levels, and how other names and Python's numeric levels map to them."""

from __future__ import annotations

import logging

LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "FATAL")

# The same aliases the gateway folds in, so a level is normalised before it is queued.
_ALIASES = {"WARNING": "WARN", "ERR": "ERROR", "CRITICAL": "FATAL", "TRACE": "DEBUG"}


def level_name(level: str | int) -> str:
    """One of LEVELS for a level name (any case, aliases allowed) or a Python level number.

    An unknown name raises ValueError at the call, rather than a refusal by the gateway
    later where nobody sees it."""
    if isinstance(level, int):
        return python_level(level)
    name = level.strip().upper()
    name = _ALIASES.get(name, name)
    if name not in LEVELS:
        raise ValueError(f"unknown level {level!r}: expected one of {', '.join(LEVELS)}")
    return name


def python_level(levelno: int) -> str:
    """Python's numeric level → the service's name; custom levels go to the one below."""
    if levelno >= logging.CRITICAL:
        return "FATAL"
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARN"
    if levelno >= logging.INFO:
        return "INFO"
    return "DEBUG"
