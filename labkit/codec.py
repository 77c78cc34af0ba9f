"""Frozen dataclasses to JSON and back, by their type hints (pure; no pydantic: a no-op lab.up
reads the remembered lab with it, and must not pay pydantic's import).

JSON executes nothing when read (pickle would run whatever a planted file says). Decoding is
strict: a field of the wrong type, a missing or unknown field raises ValueError, and the caller
decides again instead of trusting the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from typing import Any, Literal


def encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, (tuple, list)):
        return [encode(v) for v in value]
    if isinstance(value, frozenset):
        return sorted(encode(v) for v in value)
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot encode {type(value).__name__}")


def decode(hint: Any, data: Any) -> Any:
    """`data` (from encode, through JSON) as a value of type `hint`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(data, dict):
            raise ValueError(f"{hint.__name__}: not an object")
        hints = _hints(hint)
        if set(data) != set(hints):
            raise ValueError(f"{hint.__name__}: fields {sorted(set(data) ^ set(hints))} differ")
        return hint(**{name: decode(hints[name], data[name]) for name in hints})
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return decode(arg, data)
                except ValueError:
                    continue
        raise ValueError(f"{data!r} fits none of {hint}")
    if origin is Literal:
        if data not in args:
            raise ValueError(f"{data!r} is not one of {args}")
        return data
    if origin is tuple:
        _need(data, list)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], v) for v in data)
        if len(args) != len(data):
            raise ValueError(f"{data!r} has not {len(args)} items")
        return tuple(decode(a, v) for a, v in zip(args, data))
    if origin is frozenset:
        _need(data, list)
        return frozenset(decode(args[0], v) for v in data)
    if origin is dict:
        _need(data, dict)
        return {decode(args[0], k): decode(args[1], v) for k, v in data.items()}
    if hint in (str, int, float, bool):
        if type(data) is not hint and not (hint is float and type(data) is int):
            raise ValueError(f"{data!r} is not a {hint.__name__}")
        return data
    if hint is type(None):
        if data is not None:
            raise ValueError(f"{data!r} is not null")
        return None
    raise ValueError(f"cannot decode {hint}")


def _need(data: Any, kind: type) -> None:
    if not isinstance(data, kind):
        raise ValueError(f"{data!r} is not a {kind.__name__}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}
