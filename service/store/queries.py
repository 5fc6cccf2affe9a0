"""Loads queries.sql into a mapping of name to SQL text, once."""

from __future__ import annotations

import re
from importlib import resources
from types import MappingProxyType
from typing import Mapping

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse(text: str) -> Mapping[str, str]:
    """Split a file of `-- name: x` sections into {x: sql}."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return MappingProxyType(queries)


Q: Mapping[str, str] = parse(resources.files(__package__).joinpath("queries.sql").read_text())
