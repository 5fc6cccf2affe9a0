"""Loads queries.sql once: each named query, its description, and its `:name` parameters compiled
to PostgreSQL's `$n`, so that callers pass keyword arguments and no list of positions is kept by hand.

A `-- part: x` section is text several queries share (the log's INSERTs, say): a query's line
`-- include: x` stands for it, replaced here, at load, before the query is compiled. Each query is
still one fixed statement, planned on its own; nothing is assembled at run time."""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any

import msgspec

_HEADER = re.compile(r"^-- (name|part): (\w+)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"^[ \t]*-- include: (\w+)[ \t]*$", re.MULTILINE)

# What may hold a colon that is not a parameter: string literals, quoted identifiers, dollar-quoted
# bodies, comments, and `::type` casts. Matched first, and kept as they are.
_TOKENS = re.compile(
    r"""
      (?P<skip> '(?:[^']|'')*'            # 'string literal'
              | "(?:[^"]|"")*"            # "quoted identifier"
              | \$\$.*?\$\$               # $$ dollar-quoted body $$
              | --[^\n]*                  # -- comment
              | ::                        # a cast, never a parameter
      )
    | :(?P<param>[A-Za-z_][A-Za-z0-9_]*)  # :parameter
    | (?P<positional>\$[0-9]+)            # $1: not written by hand here
    """,
    re.VERBOSE | re.DOTALL,
)


class Query(msgspec.Struct, frozen=True):
    """One named statement: its SQL as sent (`$n`), and the names its positions stand for."""

    name: str
    sql: str
    params: tuple[str, ...]  # params[i] is $i+1
    description: str  # the comment lines that open the query's section

    def args(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The statement's arguments in position order, from their names; every parameter is
        required and no other name is accepted (a misspelt argument fails, never binds NULL)."""
        if len(values) != len(self.params) or any(p not in values for p in self.params):
            missing = sorted(set(self.params) - set(values))
            unknown = sorted(set(values) - set(self.params))
            raise TypeError(f"query {self.name}: missing {missing}, unknown {unknown}")
        return tuple([values[p] for p in self.params])


def compile_named(name: str, text: str) -> tuple[str, tuple[str, ...]]:
    """`text` with each `:param` replaced by `$n` (the same name, the same n), and the names in order."""
    params: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match["positional"] is not None:
            raise ValueError(f"query {name!r}: write parameters by name, not {match['positional']}")
        param = match["param"]
        if param is None:
            return match[0]
        if param not in params:
            params.append(param)
        return f"${params.index(param) + 1}"

    return _TOKENS.sub(replace, text), tuple(params)


def _description(body: str) -> str:
    lines = []
    for line in body.strip().splitlines():
        if not line.startswith("--"):
            break
        lines.append(line.removeprefix("--").strip())
    return " ".join(lines)


def _section(body: str) -> str:
    """A section's text: a section ends where the next begins, and comment lines that close it
    introduce what follows."""
    lines = body.strip().splitlines()
    while lines and lines[-1].startswith("--") and not _INCLUDE.match(lines[-1]):
        lines.pop()
    return "\n".join(lines).strip()


def _include(name: str, text: str, parts: Mapping[str, str]) -> str:
    """`text` with each `-- include: x` line replaced by part x (defined above, so never in a loop)."""

    def replace(match: re.Match[str]) -> str:
        if match[1] not in parts:
            raise ValueError(f"{name!r} includes {match[1]!r}, which is no part defined above it")
        return parts[match[1]]

    return _INCLUDE.sub(replace, text)


def parse(text: str) -> Mapping[str, Query]:
    """Split a file of `-- name: x` and `-- part: x` sections into {x: Query}, parts included."""
    parts_of = _HEADER.split(text)
    queries: dict[str, Query] = {}
    parts: dict[str, str] = {}
    used: set[str] = set()
    for kind, name, body in zip(parts_of[1::3], parts_of[2::3], parts_of[3::3], strict=True):
        if name in queries or name in parts:
            raise ValueError(f"{kind} {name!r} is defined twice")
        used.update(_INCLUDE.findall(body))
        if kind == "part":
            # A part is text only: no trailing `;`, so that it can stand inside a statement.
            lines = _section(body).splitlines()
            while lines and lines[0].startswith("--") and not _INCLUDE.match(lines[0]):  # its description, said once in this file
                lines.pop(0)
            parts[name] = _include(name, "\n".join(lines), parts)
            continue
        sql, params = compile_named(name, _include(name, _section(body), parts))
        queries[name] = Query(name=name, sql=sql, params=params, description=_description(body))
    if unused := sorted(set(parts) - used):
        raise ValueError(f"parts {unused} are included nowhere")
    return MappingProxyType(queries)

Q: Mapping[str, Query] = parse(resources.files(__package__).joinpath("queries.sql").read_text())
