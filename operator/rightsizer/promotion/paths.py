"""Field paths into a target object, and the server-side apply body that sets values at them.

A server-side apply body must name only the fields the operator means to own, and how a list merges depends on
the target's schema: an element of a keyed list (`x-kubernetes-list-type: map`, as `env` and `containers`) is
named by its key and merges with the others; a plain list is atomic, so setting one element means applying the
whole list as it is now with that element changed.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any, Mapping, Sequence, Union


@dataclasses.dataclass(frozen=True)
class Keyed:
    """The element of a keyed list whose `key` field equals `value` (env by name, containers by name)."""

    key: str
    value: str


Token = Union[str, int, Keyed]
Path = tuple[Token, ...]
MISSING = object()

_TOKEN = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)|\[([0-9]+)\]")


def parse(dotted: str) -> Path:
    """`spec.template.containers[0].env` -> ('spec', 'template', 'containers', 0, 'env'); the CRD's pattern has
    already checked the syntax."""
    tokens: list[Token] = []
    for part in dotted.split("."):
        for name, index in _TOKEN.findall(part):
            tokens.append(int(index) if index else name)
    return tuple(tokens)


def render(path: Path) -> str:
    text = ""
    for token in path:
        if isinstance(token, int):
            text += f"[{token}]"
        elif isinstance(token, Keyed):
            text += f"[{token.key}={token.value}]"
        else:
            text += ("." if text else "") + token
    return text


def get(obj: Any, path: Path) -> Any:
    """The value at `path`, or MISSING."""
    node = obj
    for token in path:
        if isinstance(token, str):
            if not isinstance(node, Mapping) or token not in node:
                return MISSING
            node = node[token]
        elif isinstance(token, int):
            if not isinstance(node, list) or token >= len(node):
                return MISSING
            node = node[token]
        else:
            if not isinstance(node, list):
                return MISSING
            node = next((e for e in node if isinstance(e, Mapping) and e.get(token.key) == token.value), MISSING)
            if node is MISSING:
                return MISSING
    return node


def apply_body(live: Mapping[str, Any], assignments: Sequence[tuple[Path, Any]]) -> dict[str, Any]:
    """The apply body (without apiVersion/kind/metadata) that sets each path to its value. Assignments whose
    value is MISSING are left out, which, applied by the manager that owned them, removes them."""
    body: dict[str, Any] = {}
    for path, value in assignments:
        if value is not MISSING:
            _put(body, path, value, live)
    return body


def _put(tree: Any, path: Path, value: Any, live: Any) -> None:
    head, rest = path[0], path[1:]
    if isinstance(head, str):
        live_child = live.get(head) if isinstance(live, Mapping) else None
        if not rest:
            tree[head] = copy.deepcopy(value)
            return
        if head not in tree:
            tree[head] = [] if isinstance(rest[0], (int, Keyed)) else {}
        _put(tree[head], rest, value, live_child)
    elif isinstance(head, Keyed):
        element = next((e for e in tree if e.get(head.key) == head.value), None)
        if element is None:
            element = {head.key: head.value}
            tree.append(element)
        live_element = next((e for e in live or () if isinstance(e, Mapping) and e.get(head.key) == head.value),
                            None)
        if not rest:
            element.update(copy.deepcopy(value))
        else:
            _put(element, rest, value, live_element)
    else:
        if not tree:  # an atomic list: the whole list as it is now, with this element changed
            tree.extend(copy.deepcopy(list(live or ())))
        while len(tree) <= head:
            tree.append({} if rest else None)
        if not rest:
            tree[head] = copy.deepcopy(value)
        else:
            if not isinstance(tree[head], dict):
                tree[head] = {}
            live_element = live[head] if isinstance(live, list) and head < len(live) else None
            _put(tree[head], rest, value, live_element)
