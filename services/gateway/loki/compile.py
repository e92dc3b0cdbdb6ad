"""LogQL log queries compiled into the one filter model (shared/filters.py).

A selector and its pipeline become a `CompiledFilter`: stream labels become the entry's
columns (service_name, level, environment, host, source), line filters become search
or exclusion terms, label filters become id fields or metadata equality. What the
filter model cannot say is refused here (`LogQLError`, a 400), never approximated.

Negative and regular-expression matchers on service_name cannot be known before the
services in the window are (the filter model names services, it does not match
patterns): they are returned as a predicate that the reader resolves against the
tenant's services in the window (read.py, from the rollups) into a list of names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from services.gateway.loki.logql import LabelFilter, LineFilter, LogQLError, LogQuery, Matcher
from shared.errors import ServiceError
from shared.filters import (
    MAX_LIST_VALUES,
    CompiledFilter,
    LogFilter,
    MetadataValue,
    compile_filter,
)
from shared.model import LEVEL_NAMES, Level

# Stream labels, in the order answers list them; `detected_level` is `level` again.
STREAM_LABELS = ("service_name", "level", "environment", "host", "source")
LEVEL_LABELS = ("level", "detected_level")
# Per-entry fields Loki calls structured metadata (Grafana's derived fields read them).
ID_FIELDS = ("trace_id", "span_id", "request_id", "user_id")
_SINGLE_VALUE = ("environment", "host", "source")
MAX_TERM = 512


def level_label(level: int) -> str:
    """The `level` label of a stored level: lower case, as Loki and Grafana write it."""
    return LEVEL_NAMES[level - 1].lower()


@dataclass(frozen=True, slots=True)
class Selection:
    """A compiled log query: `where` (with the window), plus `service_test` when
    service names must still be resolved, and `empty` when nothing can match."""

    where: CompiledFilter
    service_test: Callable[[str], bool] | None = None
    empty: bool = False

    def with_services(self, names: list[str], *, every: bool = False) -> Selection:
        """With the services the pattern selects; `every`: they are all the services
        there are in the window (`=~".+"`), so no service term is needed."""
        if not names:
            return Selection(_nothing(self.where), None, True)
        if every:
            return Selection(self.where, None, self.empty)
        if len(names) > MAX_LIST_VALUES:
            raise LogQLError(
                f"the service_name matcher selects {len(names)} services, more than "
                f"{MAX_LIST_VALUES}: narrow it"
            )
        return Selection(replace(self.where, services=tuple(sorted(names))), None, self.empty)


# -- Safe regular expressions -------------------------------------------------------------

# Grafana writes regex matchers as alternations of literals (multi-value variables, the
# label browser), sometimes with .* wildcards. Only that shape is accepted: with no
# nested quantifiers nothing can backtrack for long (Python's re is not RE2).
_REGEX_TOKEN = re.compile(r"\\[^A-Za-z0-9]|\.\*|\.\+|\.|[^\\.*+?()\[\]{}|^$]")
_MAX_WILDCARDS = 4


@dataclass(frozen=True, slots=True)
class SimpleRegex:
    branches: tuple[str, ...]  # Python regexes, fully anchored by fullmatch
    literals: tuple[str, ...] | None  # the branches as plain text when none has a wildcard
    ignore_case: bool

    def matches(self, value: str) -> bool:
        flags = re.IGNORECASE if self.ignore_case else 0
        return any(re.fullmatch(b, value, flags) for b in self.branches)


def simple_regex(pattern: str) -> SimpleRegex:
    """An alternation of literals with `.`, `.*`, `.+` wildcards, optionally `(?i)`."""
    ignore_case = pattern.startswith("(?i)")
    body = pattern[4:] if ignore_case else pattern
    branches, literals = [], []
    for branch in body.split("|"):
        out, text, wildcards, pos = [], [], 0, 0
        while pos < len(branch):
            match = _REGEX_TOKEN.match(branch, pos)
            if match is None:
                raise LogQLError(
                    f"regular expression {pattern!r} is not supported: only alternations of "
                    "literals with . .* .+ wildcards (a|b.*), optionally (?i)"
                )
            token = match.group()
            if token in (".*", ".+", "."):
                wildcards += 1
                out.append(token)
            else:
                char = token[1] if token.startswith("\\") else token
                out.append(re.escape(char))
                text.append(char)
            pos = match.end()
        if wildcards > _MAX_WILDCARDS:
            raise LogQLError(f"regular expression {pattern!r} has too many wildcards")
        branches.append("".join(out))
        literals.append("".join(text) if wildcards == 0 else None)
    plain = None if any(lit is None for lit in literals) else tuple(str(x) for x in literals)
    return SimpleRegex(tuple(branches), plain, ignore_case)


# -- Matchers ------------------------------------------------------------------------------


def _test(m: Matcher) -> Callable[[str], bool]:
    if m.op == "=":
        return lambda v: v == m.value
    if m.op == "!=":
        return lambda v: v != m.value
    regex = simple_regex(m.value)
    if m.op == "=~":
        return regex.matches
    return lambda v: not regex.matches(v)


def _level_tests(m: Matcher) -> Callable[[int], bool]:
    """Levels match by their label (`error`), their name (`ERROR`) or an alias (`warning`)."""
    if m.op in ("=", "!="):
        try:
            wanted = int(Level.parse(m.value))
        except ValueError:
            wanted = 0  # no stored level has it: `=` selects nothing, `!=` everything
        return (lambda lv: lv == wanted) if m.op == "=" else (lambda lv: lv != wanted)
    regex = simple_regex(m.value)

    def test(lv: int) -> bool:
        return regex.matches(level_label(lv)) or regex.matches(LEVEL_NAMES[lv - 1])

    return test if m.op == "=~" else (lambda lv: not test(lv))


def _single_value(m: Matcher) -> str:
    """environment/host/source: one value, `=` (or a regex that is one literal)."""
    if m.op == "=~":
        regex = simple_regex(m.value)
        if regex.literals is not None and len(regex.literals) == 1 and not regex.ignore_case:
            return regex.literals[0]
    if m.op != "=":
        raise LogQLError(
            f"{m.name}{m.op}{m.value!r} is not supported: {m.name} takes one value with = "
            "(service_name and level take =, !=, =~ and !~)"
        )
    return m.value


@dataclass(slots=True)
class _Terms:
    services: list[Callable[[str], bool]]
    service_values: set[str] | None
    levels: set[int]
    fields: dict[str, str]
    metadata: dict[str, MetadataValue]
    search: list[str]
    exclude: list[str]
    empty: bool = False

    def fix(self, name: str, value: str) -> None:
        if name in self.fields and self.fields[name] != value:
            self.empty = True  # two different values for one field: nothing matches
        self.fields[name] = value

    def add_metadata(self, key: str, value: MetadataValue) -> None:
        if key in self.metadata and self.metadata[key] != value:
            self.empty = True
        self.metadata[key] = value


def _matcher(t: _Terms, m: Matcher) -> None:
    name = m.name
    if name == "service_name":
        if m.op == "=":
            values = {m.value}
            t.service_values = values if t.service_values is None else t.service_values & values
        else:
            t.services.append(_test(m))
    elif name in LEVEL_LABELS:
        test = _level_tests(m)
        t.levels = {lv for lv in t.levels if test(lv)}
    elif name in _SINGLE_VALUE:
        t.fix(name, _single_value(m))
    elif name == "tenant":
        raise LogQLError("tenant is not a label: every query reads the caller's tenant only")
    elif name in ID_FIELDS:
        raise LogQLError(
            f"{name} is structured metadata, not a stream label: filter it after the "
            f'selector, e.g. {{service_name="api"}} | {name}="…"'
        )
    elif m.op == "=":
        # Labels pushed to us that map to no column were stored as metadata (labels.py).
        t.add_metadata(name, m.value)
    else:
        raise LogQLError(
            f"{name}{m.op}… is not supported: {name} is not one of our labels "
            f"({', '.join(STREAM_LABELS)}); other labels take = only"
        )


def _label_filter(t: _Terms, f: LabelFilter) -> None:
    if isinstance(f.value, str) and (
        f.name in ("service_name", *LEVEL_LABELS, *_SINGLE_VALUE) or f.name == "tenant"
    ):
        _matcher(t, Matcher(f.name, "=", f.value))
    elif f.name in ID_FIELDS and isinstance(f.value, str):
        t.fix(f.name, f.value)
    elif f.name in ("service_name", *LEVEL_LABELS, *_SINGLE_VALUE, *ID_FIELDS):
        raise LogQLError(f'{f.name} takes a string: | {f.name}="…"')
    else:
        t.add_metadata(f.name, f.value)


def _line_term(f: LineFilter) -> str | None:
    """The substring a line filter names, or None for `|= ""` (matches every line)."""
    value = f.value
    if f.op in ("|~", "!~"):
        regex = simple_regex(value)
        if regex.literals is None or len(regex.literals) != 1:
            raise LogQLError(
                f"line filter {f.op} {value!r} is not supported: a regular expression must be "
                'one literal (|~ "(?i)timeout"); use |= "text" for substrings'
            )
        value = regex.literals[0]
    if not value:
        return None
    if len(value) > MAX_TERM or "\x00" in value:
        raise LogQLError(f"line filter text is longer than {MAX_TERM} characters or has NUL")
    return value


def compile_log_query(q: LogQuery, start: datetime | None, end: datetime | None) -> Selection:
    """The filter of `q` over [start, end)."""
    t = _Terms([], None, {int(lv) for lv in Level}, {}, {}, [], [])
    for m in q.matchers:
        _matcher(t, m)
    for lf in q.label_filters:
        _label_filter(t, lf)
    for line in q.line_filters:
        term = _line_term(line)
        if term is not None:
            (t.search if line.op in ("|=", "|~") else t.exclude).append(term)
    if not any(_selects(m) for m in q.matchers):
        raise LogQLError(
            "queries require at least one regexp or equality matcher that does not have an "
            'empty-compatible value. For instance, app=~".*" does not meet this requirement, '
            'but app=~".+" will'
        )
    services: tuple[str, ...] = ()
    if t.service_values is not None:
        services = tuple(v for v in t.service_values if all(test(v) for test in t.services))
        t.empty = t.empty or not services
    levels = () if len(t.levels) == len(Level) else tuple(sorted(t.levels))
    t.empty = t.empty or not t.levels
    try:
        where = compile_filter(
            LogFilter(
                services=list(services) or None,
                trace_id=t.fields.get("trace_id"),
                span_id=t.fields.get("span_id"),
                user_id=t.fields.get("user_id"),
                request_id=t.fields.get("request_id"),
                environment=t.fields.get("environment"),
                host=t.fields.get("host"),
                source=t.fields.get("source"),
                metadata=t.metadata or None,
            )
        )
    except ServiceError as exc:
        raise LogQLError(f"invalid query: {exc}") from None
    where = replace(
        where,
        levels=levels,
        start=start,
        end=end,
        search_terms=tuple(dict.fromkeys(t.search)),
        exclude_terms=tuple(dict.fromkeys(t.exclude)),
    )
    if t.empty:
        where = _nothing(where)
    pending = t.services if t.service_values is None and t.services else None
    service_test = (lambda v: all(test(v) for test in pending)) if pending else None
    return Selection(where, service_test, t.empty)


def _nothing(where: CompiledFilter) -> CompiledFilter:
    """A filter no entry passes (no entry has level 0), for readers that do not look at
    `Selection.empty` (the live tail)."""
    return replace(where, levels=(0,))


def _selects(m: Matcher) -> bool:
    """A matcher that does not also match the empty value (Loki's rule against
    selecting every stream by accident)."""
    if m.op == "=":
        return m.value != ""
    if m.op == "=~":
        return not simple_regex(m.value).matches("")
    return False
