"""YAML loading that remembers where each key and item came from.

pydantic reports errors by path (`nodes.0.bridges.br0.mtu`); users need
file:line.  We compose the YAML node tree ourselves and record the line of
every mapping key and sequence item under its path.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import Problem, TopologyError

Path = tuple[Any, ...]

# Builds Python scalars (int, bool, str, ...) from YAML scalar nodes by the safe rules.
_SCALARS = yaml.constructor.SafeConstructor()


class Located:
    """Parsed YAML data plus the line (1-based) of every path in it."""

    def __init__(self, data: Any, lines: dict[Path, int], file: str):
        self.data = data
        self.lines = lines
        self.file = file

    def line_of(self, path: Path) -> int:
        """Line of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


MAX_BYTES = 1024 * 1024  # a topology is a few KiB
MAX_DEPTH = 24  # the format nests 6 levels; anything much deeper is not a topology
MERGE_TAG = "tag:yaml.org,2002:merge"


def load(text: str, file: str) -> Located:
    _screen(text, file)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise TopologyError([Problem(file, line, "", f"is not valid YAML ({exc.problem}); fix the syntax")]) from None
    if root is None:
        raise TopologyError([Problem(file, 1, "", "is empty; a topology needs at least `name` and `nodes`")])
    lines: dict[Path, int] = {(): root.start_mark.line + 1}
    problems: list[Problem] = []
    try:
        data = _convert(root, (), lines, problems, file)
    except yaml.MarkedYAMLError as exc:  # a scalar no safe constructor builds
        mark = exc.problem_mark or exc.context_mark
        raise TopologyError([Problem(file, mark.line + 1 if mark else 1, "",
                                     f"holds a value YAML cannot read ({exc.problem}); fix it")]) from None
    if problems:
        raise TopologyError(problems)
    return Located(data, lines, file)


def _screen(text: str, file: str) -> None:
    """Refuse what no topology needs before building anything from it, in bounded time and memory:
    huge files, control characters, anchors and aliases (a few lines of aliases expand to gigabytes,
    or refer to themselves), and nesting deep enough to exhaust the parser's recursion."""
    def fail(line: int, message: str) -> None:
        raise TopologyError([Problem(file, line, "", message)])

    if len(text) > MAX_BYTES:
        fail(1, f"is {len(text)} bytes; a topology file is at most {MAX_BYTES // 1024} KiB")
    depth = 0
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            line = token.start_mark.line + 1
            if isinstance(token, (yaml.AnchorToken, yaml.AliasToken)):
                fail(line, "uses a YAML anchor or alias (&name, *name); write the values out")
            if isinstance(token, yaml.TagToken):
                fail(line, "uses a YAML tag (!name); write plain values")
            if isinstance(token, (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken,
                                  yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)):
                depth += 1
                if depth > MAX_DEPTH:
                    fail(line, f"nests deeper than {MAX_DEPTH} levels; a topology needs about 6")
            elif isinstance(token, (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        fail(mark.line + 1 if mark else 1, f"is not valid YAML ({exc.problem}); fix the syntax")
    except yaml.reader.ReaderError as exc:  # a control character or a byte that is not text
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        fail(text[: exc.position].count("\n") + 1,
             f"holds the control character U+{code:04X}, which YAML does not allow; a topology file is plain text")


def _convert(node: yaml.Node, path: Path, lines: dict[Path, int], problems: list[Problem], file: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                problems.append(Problem(file, key_node.start_mark.line + 1, dotted(path),
                                        "uses a YAML merge key (<<); write the keys out"))
                continue
            key = _SCALARS.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if key is None or isinstance(key, (list, dict)):
                problems.append(Problem(file, key_node.start_mark.line + 1, dotted(path), "has a key that is not a plain name"))
                continue
            child = path + (key,)
            if key in out:
                problems.append(Problem(file, key_node.start_mark.line + 1, dotted(child), "is given twice; keep one"))
            lines[child] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, child, lines, problems, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            items.append(_convert(item, path + (index,), lines, problems, file))
        return items
    return _SCALARS.construct_object(node)


def dotted(path: Path) -> str:
    """`nodes[0].bridges.br0.bond` - the key path users see in messages."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out

