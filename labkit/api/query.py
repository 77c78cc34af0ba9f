"""v4 list queries (pure): `$filter` (an OData subset), `$orderby`, `$page` and `$limit` over
entities already shaped (api/shapes.py).

`$filter`: comparisons `field eq|ne|gt|ge|lt|le value` (a value is 'text', a number, true, false
or null; a typed literal like Clustermgmt.Config.ClusterFunctionRef'AOS' is its text), the
functions startswith, endswith and contains, `field/any(x:x eq value)` over a list, `and`, `or`,
`not` and parentheses; a field is a path of JSON keys joined by '/' (name, networkId,
config/clusterFunction). Anything else is a BadRequest naming what was not understood.
`$page` counts from 0, `$limit` is 1 to 100 (50 by default), as Nutanix documents them.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from .shapes import BadRequest

DEFAULT_LIMIT, MAX_LIMIT, MAX_FILTER = 50, 100, 1024
_TOKEN = re.compile(r"\s*(?:(?P<str>(?:[A-Za-z_][\w.]*)?'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)"
                    r"|(?P<name>[A-Za-z_$][\w$]*(?:/[A-Za-z_$][\w$]*)*)|(?P<punct>[(),:]))")


def _tokens(text: str) -> list[tuple[str, Any]]:
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            if text[pos:].strip() == "":
                break
            raise BadRequest(f"$filter: cannot read {text[pos:pos + 20]!r}; write it like name eq 'web1'")
        pos = match.end()
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "str":
            value = value[value.index("'") + 1:-1].replace("''", "'")
        elif kind == "num":
            value = float(value) if "." in value else int(value)
        out.append((kind, value))
    return out


class _Parser:
    def __init__(self, text: str):
        if len(text) > MAX_FILTER:
            raise BadRequest(f"$filter is {len(text)} characters long; at most {MAX_FILTER}")
        self.tokens, self.at = _tokens(text), 0

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, kind: str | None = None, value: Any = None) -> tuple[str, Any]:
        token = self.peek()
        if token is None or (kind and token[0] != kind) or (value is not None and token[1] != value):
            want = value or kind or "more"
            raise BadRequest(f"$filter: expected {want!r} {'at the end' if token is None else f'at {token[1]!r}'}")
        self.at += 1
        return token

    def parse(self) -> Callable[[dict], bool]:
        test = self.disjunction()
        if self.peek() is not None:
            raise BadRequest(f"$filter: unexpected {self.peek()[1]!r}")
        return test

    def disjunction(self):
        tests = [self.conjunction()]
        while self.peek() == ("name", "or"):
            self.take()
            tests.append(self.conjunction())
        return tests[0] if len(tests) == 1 else (lambda e: any(t(e) for t in tests))

    def conjunction(self):
        tests = [self.negation()]
        while self.peek() == ("name", "and"):
            self.take()
            tests.append(self.negation())
        return tests[0] if len(tests) == 1 else (lambda e: all(t(e) for t in tests))

    def negation(self):
        if self.peek() == ("name", "not"):
            self.take()
            inner = self.negation()
            return lambda e: not inner(e)
        return self.primary()

    def primary(self):
        if self.peek() == ("punct", "("):
            self.take()
            inner = self.disjunction()
            self.take("punct", ")")
            return inner
        _, name = self.take("name")
        if name in ("startswith", "endswith", "contains"):
            self.take("punct", "(")
            _, field = self.take("name")
            self.take("punct", ",")
            _, text = self.take("str")
            self.take("punct", ")")
            how = {"startswith": str.startswith, "endswith": str.endswith, "contains": str.__contains__}[name]
            return lambda e: isinstance(got := _get(e, field), str) and how(got, text)
        if name.endswith("/any"):
            field = name.removesuffix("/any")
            self.take("punct", "(")
            _, var = self.take("name")
            self.take("punct", ":")
            self.take("name", var)
            inner = self.comparison(lambda item, _path: item, var)
            self.take("punct", ")")
            return lambda e: isinstance(items := _get(e, field), list) and any(inner(item) for item in items)
        if self.peek() == ("punct", "("):
            raise BadRequest(f"$filter: {name!r:.40} is not a function here; use startswith, endswith, contains or any")
        return self.comparison(_get, name)

    def comparison(self, getter, field):
        _, op = self.take("name")
        if op not in _OPS:
            raise BadRequest(f"$filter: {op!r} is not a comparison; use eq, ne, gt, ge, lt or le")
        kind, value = self.take()
        if kind == "name":
            value = {"true": True, "false": False, "null": None}.get(value, _MISSING)
            if value is _MISSING:
                raise BadRequest("$filter: compare with 'text', a number, true, false or null")
        compare = _OPS[op]
        return lambda e: _safe(compare, getter(e, field), value)


_MISSING = object()
_OPS = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
        "lt": lambda a, b: a < b, "le": lambda a, b: a <= b}


def _safe(compare, a, b) -> bool:
    try:
        return bool(compare(a, b))
    except TypeError:  # a number against text: not equal, not ordered
        return False


def _get(entity: dict, path: str):
    value: Any = entity
    for key in path.split("/"):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def select(entities: list[dict], params: dict[str, str]) -> tuple[list[dict], int]:
    """(the page asked for, the number of entities that match) under `$filter`, `$orderby`, `$page`, `$limit`."""
    found = entities
    if params.get("$filter"):
        test = _Parser(params["$filter"]).parse()
        found = [e for e in found if test(e)]
    for clause in reversed([c.strip() for c in (params.get("$orderby") or "").split(",") if c.strip()]):
        field, _, direction = clause.partition(" ")
        if direction.strip() not in ("", "asc", "desc"):
            raise BadRequest(f"$orderby: {clause!r:.60} is not FIELD, FIELD asc or FIELD desc")
        found = sorted(found, key=lambda e: (_get(e, field) is None, str(type(_get(e, field))), _get(e, field) or 0),
                       reverse=direction.strip() == "desc")
    page, limit = _number(params, "$page", 0, 0, 1_000_000), _number(params, "$limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    return found[page * limit:(page + 1) * limit], len(found)


def _number(params: dict, key: str, default: int, low: int, high: int) -> int:
    text = params.get(key)
    if text is None:
        return default
    if not re.fullmatch(r"\d{1,7}", text) or not low <= int(text) <= high:
        raise BadRequest(f"{key}={text!r:.20} must be a number from {low} to {high}")
    return int(text)
