"""Loki's API under /loki/api/v1: the push (push.py). Every error under it is answered
as Loki answers, in plain text (answers.py), not as the rest of the API's problem JSON."""

from __future__ import annotations

from litestar import Router

from services.gateway.loki.answers import TEXT_ERROR_HANDLERS
from services.gateway.loki.push import push_logs


def loki_router() -> Router:
    return Router(
        path="/loki/api/v1",
        route_handlers=[push_logs],
        exception_handlers=TEXT_ERROR_HANDLERS,
    )
