"""An alert's facts as short readable text, for the channels read by people (Slack,
e-mail, Alertmanager's annotations); one wording for all of them."""

from __future__ import annotations

from datetime import UTC, datetime

from services.evaluator.channels.base import Payload


def title(p: Payload) -> str:
    """`[FIRING] [critical] checkout errors`"""
    return f"[{p.status.upper()}] [{p.alert.severity}] {p.alert.name}"


def condition(p: Payload) -> str:
    """When the rule fires: `≥ 5` (above) or `< 5` (below)."""
    return f"{'≥' if p.alert.condition == 'above' else '<'} {p.alert.threshold}"


def group(p: Payload) -> str:
    """`service_name=checkout, level=ERROR`, or what a rule without group_by counts."""
    parts = [f"{k}={v if v is not None else '(none)'}" for k, v in p.group.items()]
    return ", ".join(parts) if parts else "all matching entries"


def count(p: Payload) -> str:
    """`7 entries in 5 min (fires at ≥ 5)`"""
    noun = "entry" if p.observed_count == 1 else "entries"
    return f"{p.observed_count} {noun} in {p.alert.window_mins} min (fires at {condition(p)})"


def window(p: Payload) -> str:
    """`2025-01-02 10:00:30 to 10:05:30 UTC` (the end's date too when it differs). With
    seconds: a window ends at the committed watermark, not on a minute."""
    start, end = _utc(p.window_start), _utc(p.window_end)
    end_format = "%H:%M:%S" if start.date() == end.date() else "%Y-%m-%d %H:%M:%S"
    return f"{start:%Y-%m-%d %H:%M:%S} to {end.strftime(end_format)} UTC"


def timestamp(moment: datetime) -> str:
    return f"{_utc(moment):%Y-%m-%d %H:%M:%S} UTC"


def lines(p: Payload) -> list[tuple[str, str]]:
    """Every fact as (label, value), in reading order; the link comes last."""
    facts = [
        ("Status", p.status.upper()),
        ("Rule", p.alert.name),
        ("Severity", p.alert.severity),
        ("Group", group(p)),
        ("Count", count(p)),
        ("Window", window(p)),
        ("Firing since", timestamp(p.started_at)),
    ]
    if p.resolved_at is not None:
        facts.append(("Resolved at", timestamp(p.resolved_at)))
    if p.reason:
        facts.append(("Reason", p.reason))
    facts.append(("Matching logs", p.link))
    return facts


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
