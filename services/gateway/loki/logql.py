"""LogQL, the subset we answer: parsed by hand into a small syntax tree (no evaluation).

The grammar (README, "Grafana" has it with examples):

    query        = metric | log_query
    log_query    = selector { stage }
    selector     = "{" [ matcher { "," matcher } ] "}"
    matcher      = IDENT ( "=" | "!=" | "=~" | "!~" ) STRING
    stage        = line_filter | "|" parser | "|" label_filter | "|" drop
    line_filter  = ( "|=" | "!=" | "|~" | "!~" ) STRING
    parser       = "json" | "logfmt"
    label_filter = IDENT ( "=" | "==" ) ( STRING | NUMBER )
    drop         = "drop" IDENT { "," IDENT }
    metric       = aggregation | range_function | topk | constant
    range_function = ( "count_over_time" | "rate" | "bytes_over_time" | "bytes_rate" )
                     "(" log_query "[" DURATION "]" ")"
    aggregation  = ( "sum" | "count" ) [ grouping ] "(" metric ")" [ grouping ]
    grouping     = ( "by" | "without" ) "(" [ IDENT { "," IDENT } ] ")"
    topk         = ( "topk" | "bottomk" ) [ grouping ] "(" NUMBER "," metric ")" [ grouping ]
    constant     = term { ( "+" | "-" | "*" | "/" ) term }   (numbers and vector(NUMBER) only)
    term         = NUMBER | "vector" "(" NUMBER ")" | "(" constant ")"

STRING is a Go string: "double quoted" with backslash escapes, or `raw`. Anything
outside the subset is a `LogQLError` naming the construct; the caller answers 400.
A hand-written recursive descent keeps every error positioned (Loki's own wording:
`parse error at line 1, col 7: …`) and its depth bounded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

MAX_QUERY_LENGTH = 16_384
MAX_DEPTH = 16

MatchOp = Literal["=", "!=", "=~", "!~"]
LineOp = Literal["|=", "!=", "|~", "!~"]
RangeFunction = Literal["count_over_time", "rate", "bytes_over_time", "bytes_rate"]
RANGE_FUNCTIONS: tuple[RangeFunction, ...] = (
    "count_over_time",
    "rate",
    "bytes_over_time",
    "bytes_rate",
)
# Loki functions we know of but do not answer: named in the error instead of "unexpected".
_UNSUPPORTED_FUNCTIONS = frozenset(
    {
        "avg", "min", "max", "stddev", "stdvar", "sort", "sort_desc", "absent_over_time",
        "avg_over_time", "max_over_time", "min_over_time", "sum_over_time",
        "quantile_over_time", "first_over_time", "last_over_time", "stddev_over_time",
        "stdvar_over_time", "rate_counter", "label_replace", "approx_topk",
    }
)  # fmt: skip
_UNSUPPORTED_STAGES = frozenset(
    {
        "line_format", "label_format", "regexp", "pattern", "unpack", "unwrap", "keep",
        "decolorize", "distinct",
    }
)  # fmt: skip


class LogQLError(ValueError):
    """A query we cannot answer: malformed, or outside the subset. The text is what the
    client is told."""


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: MatchOp
    value: str


@dataclass(frozen=True, slots=True)
class LineFilter:
    op: LineOp
    value: str


@dataclass(frozen=True, slots=True)
class LabelFilter:
    """`| name="value"` (a string) or `| name=500` (a number) after the selector."""

    name: str
    value: str | int | float


@dataclass(frozen=True, slots=True)
class LogQuery:
    matchers: tuple[Matcher, ...]
    line_filters: tuple[LineFilter, ...] = ()
    label_filters: tuple[LabelFilter, ...] = ()


@dataclass(frozen=True, slots=True)
class Grouping:
    without: bool
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RangeAggregation:
    function: RangeFunction
    query: LogQuery
    range: timedelta


@dataclass(frozen=True, slots=True)
class VectorAggregation:
    op: Literal["sum", "count"]
    grouping: Grouping | None
    inner: Metric


@dataclass(frozen=True, slots=True)
class TopK:
    op: Literal["topk", "bottomk"]
    k: int
    inner: Metric


@dataclass(frozen=True, slots=True)
class Constant:
    """A scalar: `vector(1)+vector(1)` is Grafana's health check."""

    value: float


Metric = RangeAggregation | VectorAggregation | TopK | Constant
Query = LogQuery | Metric


# -- Tokens -----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|`[^`]*`)
  | (?P<duration>(?:\d+(?:ms|us|µs|ns|s|m|h|d|w|y))+)(?![A-Za-z0-9_])
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?![A-Za-z_])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<op>\|=|\|~|!=|!~|=~|==|>=|<=|[{}()\[\],|=+\-*/<>])
    """,
    re.VERBOSE | re.DOTALL,
)
_DURATION_PART = re.compile(r"(\d+)(ms|us|µs|ns|s|m|h|d|w|y)")
_UNITS = {
    "ns": timedelta(microseconds=0.001),
    "us": timedelta(microseconds=1),
    "µs": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
    "y": timedelta(days=365),
}
_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", '"': '"', "'": "'",
}  # fmt: skip
_ESCAPE = re.compile(r"\\(?:x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|([0-7]{3})|(.))")
MAX_DURATION = timedelta(days=3650)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # string, duration, number, ident, op, end
    text: str
    pos: int


def parse_duration(text: str) -> timedelta:
    """A Prometheus duration (`5m`, `1h30m`, `250ms`); raises ValueError."""
    pos, total = 0, timedelta(0)
    for part in _DURATION_PART.finditer(text):
        if part.start() != pos:
            raise ValueError(f"not a duration: {text!r}")
        amount = int(part.group(1))
        if amount > 10**9:
            raise ValueError(f"duration too long: {text!r}")
        total += amount * _UNITS[part.group(2)]
        pos = part.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r}")
    if total > MAX_DURATION:
        raise ValueError(f"duration too long: {text!r}")
    return total


def _unquote(text: str) -> str:
    if text[0] == "`":
        return text[1:-1]

    def one(match: re.Match[str]) -> str:
        digits = match.group(1) or match.group(2) or match.group(3)
        if digits:
            code = int(digits, 16)
        elif match.group(4):
            code = int(match.group(4), 8)
        else:
            simple = _SIMPLE_ESCAPES.get(match.group(5))
            if simple is None:
                raise ValueError(f"invalid escape \\{match.group(5)}")
            return simple
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise ValueError("invalid escape: not a character")
        return chr(code)

    return _ESCAPE.sub(one, text[1:-1])


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _error(text, pos, f"unexpected character {text[pos]!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def _error(text: str, pos: int, message: str) -> LogQLError:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return LogQLError(f"parse error at line {line}, col {col}: {message}")


# -- Parser -----------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    # Helpers.

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def error(self, message: str, token: Token | None = None) -> LogQLError:
        return _error(self.text, (token or self.tok).pos, message)

    def unexpected(self, wanted: str) -> LogQLError:
        tok = self.tok
        found = "end of query" if tok.kind == "end" else repr(tok.text)
        return self.error(f"syntax error: unexpected {found}, expecting {wanted}")

    def take(self, kind: str, text: str | None = None) -> Token:
        tok = self.tok
        if tok.kind != kind or (text is not None and tok.text != text):
            raise self.unexpected(repr(text) if text else kind)
        self.i += 1
        return tok

    def accept(self, kind: str, text: str) -> bool:
        if self.tok.kind == kind and self.tok.text == text:
            self.i += 1
            return True
        return False

    def string(self) -> str:
        tok = self.take("string")
        try:
            return _unquote(tok.text)
        except ValueError as exc:
            raise self.error(str(exc), tok) from None

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"query nested deeper than {MAX_DEPTH} levels")

    # Grammar.

    def query(self) -> Query:
        if self.tok.kind == "op" and self.tok.text == "{":
            result: Query = self.log_query()
        else:
            result = self.metric()
        if self.tok.kind != "end":
            raise self.unexpected("end of query")
        return result

    def log_query(self) -> LogQuery:
        matchers = self.selector()
        lines: list[LineFilter] = []
        labels: list[LabelFilter] = []
        while True:
            tok = self.tok
            if tok.kind == "op" and tok.text in ("|=", "|~", "!=", "!~"):
                self.i += 1
                lines.append(LineFilter(tok.text, self.string()))  # type: ignore[arg-type]
                if self.tok.kind == "ident" and self.tok.text == "or":
                    raise self.error("`or` in line filters is not supported")
            elif tok.kind == "op" and tok.text == "|":
                self.i += 1
                label = self.stage()
                if label is not None:
                    labels.append(label)
            else:
                break
        return LogQuery(tuple(matchers), tuple(lines), tuple(labels))

    def selector(self) -> list[Matcher]:
        self.take("op", "{")
        matchers: list[Matcher] = []
        while not self.accept("op", "}"):
            if matchers:
                self.take("op", ",")
            name = self.take("ident")
            op = self.tok
            if op.kind != "op" or op.text not in ("=", "!=", "=~", "!~"):
                raise self.unexpected("one of =, !=, =~, !~")
            self.i += 1
            matchers.append(Matcher(name.text, op.text, self.string()))  # type: ignore[arg-type]
        if not matchers:
            raise self.error('queries require at least one label matcher: {name="value"}')
        return matchers

    def stage(self) -> LabelFilter | None:
        tok = self.take("ident")
        if tok.text in ("json", "logfmt"):
            # Our entries are structured already: their fields are labels without parsing.
            if self.tok.kind in ("ident", "string") and self.peek().text not in ("=", "=="):
                raise self.error(f"{tok.text} with arguments is not supported", self.tok)
            return None
        if tok.text == "drop":
            for n in self._names():
                if n not in ("__error__", "__error_details__"):
                    raise self.error(f"drop {n} is not supported (only __error__)", tok)
            return None
        if tok.text in _UNSUPPORTED_STAGES:
            raise self.error(f"the {tok.text} stage is not supported", tok)
        op = self.tok
        if op.kind != "op" or op.text not in ("=", "=="):
            if op.kind == "op" and op.text in ("!=", "=~", "!~", ">", ">=", "<", "<="):
                raise self.error(f'label filter {op.text} is not supported (only name="value")', op)
            raise self.unexpected('a label filter name="value", json or logfmt')
        self.i += 1
        if self.tok.kind == "string":
            return LabelFilter(tok.text, self.string())
        if self.tok.kind == "number":
            return LabelFilter(tok.text, self._number_value(self.take("number")))
        raise self.unexpected("a string or a number")

    def _names(self) -> list[str]:
        names = [self.take("ident").text]
        while self.accept("op", ","):
            names.append(self.take("ident").text)
        return names

    def _number_value(self, tok: Token) -> int | float:
        try:
            value = float(tok.text)
        except ValueError:
            raise self.error(f"bad number {tok.text!r}", tok) from None
        if not math.isfinite(value):
            raise self.error(f"bad number {tok.text!r}", tok)
        if re.fullmatch(r"\d+", tok.text) and len(tok.text) <= 18:
            return int(tok.text)
        return value

    def metric(self) -> Metric:
        self.nested()
        try:
            tok = self.tok
            if tok.kind == "ident" and tok.text in RANGE_FUNCTIONS:
                return self.range_function()
            if tok.kind == "ident" and tok.text in ("sum", "count"):
                return self.aggregation()
            if tok.kind == "ident" and tok.text in ("topk", "bottomk"):
                return self.topk()
            if tok.kind == "ident" and tok.text in _UNSUPPORTED_FUNCTIONS:
                raise self.error(f"{tok.text} is not supported")
            if tok.kind in ("number", "ident", "op"):
                return Constant(self.constant())
            raise self.unexpected("a log selector {…} or a metric query")
        finally:
            self.depth -= 1

    def range_function(self) -> RangeAggregation:
        name = self.take("ident").text
        self.take("op", "(")
        inner = self.log_query()
        self.take("op", "[")
        tok = self.tok
        if tok.kind != "duration":
            raise self.unexpected("a duration such as 5m")
        self.i += 1
        try:
            width = parse_duration(tok.text)
        except ValueError as exc:
            raise self.error(str(exc), tok) from None
        if width <= timedelta(0):
            raise self.error("the range must be positive", tok)
        self.take("op", "]")
        if self.tok.kind == "ident" and self.tok.text == "offset":
            raise self.error("offset is not supported")
        self.take("op", ")")
        return RangeAggregation(name, inner, width)  # type: ignore[arg-type]

    def grouping(self) -> Grouping | None:
        tok = self.tok
        if tok.kind != "ident" or tok.text not in ("by", "without"):
            return None
        self.i += 1
        self.take("op", "(")
        labels: list[str] = []
        while not self.accept("op", ")"):
            if labels:
                self.take("op", ",")
            labels.append(self.take("ident").text)
        return Grouping(tok.text == "without", tuple(labels))

    def aggregation(self) -> VectorAggregation:
        op = self.take("ident").text
        before = self.grouping()
        self.take("op", "(")
        inner = self.metric()
        self.take("op", ")")
        after = self.grouping()
        if before is not None and after is not None:
            raise self.error("grouping given twice")
        return VectorAggregation(op, before or after, inner)  # type: ignore[arg-type]

    def topk(self) -> TopK:
        op = self.take("ident").text
        before = self.grouping()
        self.take("op", "(")
        tok = self.take("number")
        k = self._number_value(tok)
        if not isinstance(k, int) or k < 1 or k > 10_000:
            raise self.error(f"{op}'s parameter must be a whole number from 1 to 10000", tok)
        self.take("op", ",")
        inner = self.metric()
        self.take("op", ")")
        after = self.grouping()
        if before is not None or after is not None:
            raise self.error(f"{op} by/without is not supported")
        return TopK(op, k, inner)  # type: ignore[arg-type]

    # Constant arithmetic: enough for `vector(1)+vector(1)`, nothing that reads logs.

    def constant(self) -> float:
        value = self.term()
        while self.tok.kind == "op" and self.tok.text in ("+", "-", "*", "/"):
            op = self.take("op").text
            right = self.term()
            if op == "+":
                value += right
            elif op == "-":
                value -= right
            elif op == "*":
                value *= right
            else:
                value = value / right if right else math.nan
        return value

    def term(self) -> float:
        tok = self.tok
        if tok.kind == "number":
            self.i += 1
            return float(self._number_value(tok))
        if tok.kind == "ident" and tok.text == "vector":
            self.i += 1
            self.take("op", "(")
            value = float(self._number_value(self.take("number")))
            self.take("op", ")")
            return value
        if tok.kind == "op" and tok.text == "(":
            self.i += 1
            self.nested()
            value = self.constant()
            self.depth -= 1
            self.take("op", ")")
            return value
        if tok.kind == "ident" and tok.text in _UNSUPPORTED_FUNCTIONS:
            raise self.error(f"{tok.text} is not supported")
        raise self.unexpected("a log selector {…} or a metric query")


def parse(text: str) -> Query:
    """The syntax tree of `text`, or LogQLError (never another exception)."""
    if len(text) > MAX_QUERY_LENGTH:
        raise LogQLError(f"the query is longer than {MAX_QUERY_LENGTH} characters")
    if not text.strip():
        raise LogQLError("parse error: empty query")
    if "\x00" in text:
        raise LogQLError("parse error: the query contains NUL")
    return _Parser(text).query()
