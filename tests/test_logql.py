"""The LogQL parser and compiler: the subset parses into the tree it means, compiles into
the filter model, and anything else (malformed, unsupported, hostile) is a LogQLError,
never another exception (property-based: hypothesis)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.loki.compile import compile_log_query, simple_regex
from services.gateway.loki.logql import (
    Constant,
    Grouping,
    LabelFilter,
    LineFilter,
    LogQLError,
    LogQuery,
    Matcher,
    RangeAggregation,
    TopK,
    VectorAggregation,
    parse,
    parse_duration,
)
from services.gateway.loki.read_params import parse_step, parse_time
from shared.model import Level

T0 = datetime(2024, 1, 15, tzinfo=UTC)


def test_selector_pipeline_parses_into_its_tree() -> None:
    q = parse(
        '{service_name="api", level=~"error|warn"} |= "timeout" != `debug` | json '
        '| error_code="AUTH_001" | status=500 | drop __error__, __error_details__'
    )
    assert q == LogQuery(
        (Matcher("service_name", "=", "api"), Matcher("level", "=~", "error|warn")),
        (LineFilter("|=", "timeout"), LineFilter("!=", "debug")),
        (LabelFilter("error_code", "AUTH_001"), LabelFilter("status", 500)),
    )


def test_metric_queries_parse_with_grouping_before_or_after() -> None:
    volume = parse('sum by (level, detected_level) (count_over_time({a="b"} | drop __error__[1m]))')
    assert volume == VectorAggregation(
        "sum",
        Grouping(False, ("level", "detected_level")),
        RangeAggregation(
            "count_over_time", LogQuery((Matcher("a", "=", "b"),)), timedelta(minutes=1)
        ),
    )
    after = parse('sum(rate({a="b"}[5m])) without (host)')
    assert isinstance(after, VectorAggregation) and after.grouping == Grouping(True, ("host",))
    top = parse('topk(3, sum by (service_name) (bytes_rate({a="b"} |= "x" [1h30m])))')
    assert isinstance(top, TopK) and top.k == 3
    assert parse("vector(1)+vector(1)") == Constant(2.0)


def test_strings_follow_go_escapes() -> None:
    q = parse(r'{a="tab\there \"q\" \u00e9 \x41"} |= `raw\n`')
    assert isinstance(q, LogQuery)
    assert q.matchers[0].value == 'tab\there "q" é A'
    assert q.line_filters[0].value == "raw\\n"


def test_durations_and_times_are_read_as_loki_reads_them() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("250ms") == timedelta(milliseconds=250)
    assert parse_step("1000ms") == timedelta(seconds=1)
    assert parse_step("15") == timedelta(seconds=15)
    assert parse_time("1705276800", "t") == datetime(2024, 1, 15, tzinfo=UTC)
    assert parse_time("1705276800000000000", "t") == datetime(2024, 1, 15, tzinfo=UTC)
    assert parse_time("1705276800.5", "t") == datetime(2024, 1, 15, 0, 0, 0, 500000, tzinfo=UTC)
    assert parse_time("2024-01-15T00:00:00Z", "t") == datetime(2024, 1, 15, tzinfo=UTC)


def test_errors_name_line_and_column() -> None:
    with pytest.raises(LogQLError, match=r"line 1, col 19: syntax error: unexpected .level."):
        parse('{service_name="a" level="b"}')
    with pytest.raises(LogQLError, match="avg_over_time is not supported"):
        parse('avg_over_time({a="b"}[5m])')


def test_compiled_selector_is_the_filter_models() -> None:
    q = parse(
        '{service_name="api", level!="debug", environment="prod", job="varlogs"} '
        '|= "timeout" != "retry" | trace_id="t1" | duration_ms=800'
    )
    assert isinstance(q, LogQuery)
    sel = compile_log_query(q, T0, T0 + timedelta(hours=1))
    w = sel.where
    assert w.services == ("api",)
    assert w.levels == tuple(int(lv) for lv in (Level.INFO, Level.WARN, Level.ERROR, Level.FATAL))
    assert (w.environment, w.trace_id) == ("prod", "t1")
    assert w.search_terms == ("timeout",) and w.exclude_terms == ("retry",)
    assert dict(w.metadata) == {"job": "varlogs", "duration_ms": 800}
    assert (w.start, w.end) == (T0, T0 + timedelta(hours=1))
    assert sel.service_test is None and not sel.empty


def test_service_patterns_are_resolved_later_and_contradictions_select_nothing() -> None:
    q = parse('{service_name=~"pay.*|auth", service_name!="payroll"}')
    assert isinstance(q, LogQuery)
    sel = compile_log_query(q, None, None)
    assert sel.service_test is not None
    assert [s for s in ("payment", "payroll", "auth", "authz") if sel.service_test(s)] == [
        "payment",
        "auth",
    ]
    both = parse('{service_name="a"} | service_name="b"')
    assert isinstance(both, LogQuery)
    assert compile_log_query(both, None, None).empty
    no_level = parse('{service_name="a", level="nonsense"}')
    assert isinstance(no_level, LogQuery)
    assert compile_log_query(no_level, None, None).empty


def test_only_safe_regular_expressions_are_accepted() -> None:
    assert simple_regex("a|b.*|c\\.d").matches("c.d")
    assert simple_regex("(?i)ERROR").matches("error")
    for hostile in ("(a+)+$", "a{1,1000}", "[a-z]+", "a|(b", "^a$", "a?"):
        with pytest.raises(LogQLError):
            simple_regex(hostile)


# -- Fuzzing: nothing but LogQLError, whatever the input --------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "{", "}", "(", ")", "[", "]", ",", "|", "|=", "!=", "|~", "!~", "=~", "=", "==",
        '"x"', "`y`", '"\\', "5m", "1h", "0s", "sum", "count", "by", "without", "topk",
        "bottomk", "count_over_time", "rate", "bytes_over_time", "bytes_rate", "vector",
        "json", "logfmt", "drop", "__error__", "service_name", "level", "host", "3",
        "1e400", "-", "+", "*", "/", " ", "\n", "offset", "line_format", "or", "\x00",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_FRAGMENTS, max_size=30).map("".join))
def test_fragment_soup_parses_or_is_a_logql_error(text: str) -> None:
    try:
        q = parse(text)
    except LogQLError:
        return
    if isinstance(q, LogQuery):
        with contextlib.suppress(LogQLError):
            compile_log_query(q, T0, T0 + timedelta(hours=1))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_is_a_logql_error(text: str) -> None:
    with contextlib.suppress(LogQLError):
        parse(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.sampled_from(["=", "!=", "=~", "!~"]), st.sampled_from(
    ["service_name", "level", "environment", "host", "job", "trace_id", "tenant"]
))  # fmt: skip
def test_any_matcher_value_compiles_or_is_a_logql_error(value: str, op: str, name: str) -> None:
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    try:
        q = parse(f"{{{name}{op}{quoted}}} |= {quoted}")
        assert isinstance(q, LogQuery)
        sel = compile_log_query(q, T0, T0 + timedelta(hours=1))
    except LogQLError:
        return
    if sel.service_test is not None:
        sel.service_test("a" * 256)  # no catastrophic backtracking on a long name


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(LogQLError):
        parse("sum(" * 500 + 'count_over_time({a="b"}[1m])' + ")" * 500)
    with pytest.raises(LogQLError):
        parse("(" * 5000 + "1" + ")" * 5000)
    with pytest.raises(LogQLError):
        parse('{a="b"}' + ' |= "x"' * 10_000)
