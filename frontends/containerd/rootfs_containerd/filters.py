"""containerd's filter syntax, as far as snapshot listings use it.

A filter is selectors joined by ``,`` (all must match); a selector is a
field path (``name``, ``parent``, ``kind``, ``labels.KEY``; a part with
other characters than letters, digits and ``_`` quoted: ``labels."a.b/c"``),
alone (the field is present and not empty) or followed by ``==``, ``!=`` or
``~=`` (a regular expression) and a value, bare or double-quoted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

Fields = Callable[[list[str]], str | None]


class FilterError(ValueError):
    """A filter that does not parse."""


_BARE = re.compile(r"[A-Za-z0-9_]+")
_VALUE = re.compile(r"[^,\"]+")


def _quoted(text: str, pos: int) -> tuple[str, int]:
    if text[pos] != '"':
        raise FilterError(f"expected a quoted string at {pos} in {text!r}")
    out = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == '"':
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    raise FilterError(f"unterminated quoted string in {text!r}")


def _part(text: str, pos: int) -> tuple[str, int]:
    if pos < len(text) and text[pos] == '"':
        return _quoted(text, pos)
    match = _BARE.match(text, pos)
    if not match:
        raise FilterError(f"expected a field name at {pos} in {text!r}")
    return match.group(), match.end()


Selector = tuple[list[str], str | None, str | None]


def parse(text: str) -> list[Selector]:
    """The selectors of one filter: (field path, operator or None, value or None)."""
    selectors: list[Selector] = []
    pos = 0
    while True:
        path = []
        part, pos = _part(text, pos)
        path.append(part)
        while pos < len(text) and text[pos] == ".":
            part, pos = _part(text, pos + 1)
            path.append(part)
        op = value = None
        if text.startswith(("==", "!=", "~="), pos):
            op = text[pos : pos + 2]
            pos += 2
            if pos < len(text) and text[pos] == '"':
                value, pos = _quoted(text, pos)
            else:
                match = _VALUE.match(text, pos)
                if not match:
                    raise FilterError(f"expected a value at {pos} in {text!r}")
                value, pos = match.group().strip(), match.end()
            if op == "~=":
                try:
                    re.compile(value)
                except re.error as exc:
                    raise FilterError(f"bad regular expression {value!r}: {exc}") from exc
        selectors.append((path, op, value))
        if pos == len(text):
            return selectors
        if text[pos] != ",":
            raise FilterError(f"unexpected {text[pos]!r} at {pos} in {text!r}")
        pos += 1


def snapshot_fields(name: str, parent: str | None, kind: str, labels: Mapping[str, str]) -> Fields:
    """The field lookup of one snapshot, for ``matches``."""

    def lookup(path: list[str]) -> str | None:
        if len(path) == 1 and path[0] in ("name", "parent", "kind"):
            return {"name": name, "parent": parent or "", "kind": kind}[path[0]]
        if len(path) >= 2 and path[0] == "labels":
            return labels.get(".".join(path[1:]))
        return None

    return lookup


def matches(filters: list[list[Selector]], fields: Fields) -> bool:
    """Whether any filter matches (every item with no filter at all)."""
    if not filters:
        return True
    return any(all(_matches(selector, fields) for selector in selectors) for selectors in filters)


def _matches(selector: Selector, fields: Fields) -> bool:
    path, op, value = selector
    found = fields(path)
    if op is None:
        return bool(found)
    if op == "==":
        return found == value
    if op == "!=":
        return found != value
    return found is not None and re.search(value or "", found) is not None
