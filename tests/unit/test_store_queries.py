"""queries.sql: every query named, described, written with named parameters, and used by the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from service.store.queries import Q, compile_named, parse

SERVICE = Path(__file__).resolve().parents[2] / "service"
RUNNERS = {"rows", "row", "value", "value_or_none", "run", "_write_log"}  # Session's, and Appends' writer of a log
STEPS = {"lock", "plan", "clear", "fill", "prune"}  # service.store.rebuild.Step's query names


def _names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _names(node.body) + _names(node.orelse)
    return []


def named_in_code() -> dict[str, str]:
    """Each query name the service's code runs, and a place that runs it."""
    found: dict[str, str] = {}
    for path in SERVICE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in RUNNERS:
                names = _names(node.args[0]) if node.args else []
            elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "Q":
                names = _names(node.slice)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Step":
                names = [n for k in node.keywords if k.arg in STEPS for n in _names(k.value)]
            for name in names:
                found.setdefault(name, f"{path.relative_to(SERVICE.parent)}:{node.lineno}")  # type: ignore[attr-defined]
    return found


def test_every_query_the_code_names_exists():
    missing = {name: where for name, where in named_in_code().items() if name not in Q}
    assert not missing, missing


def test_every_query_is_used_by_the_code():
    assert sorted(set(Q) - set(named_in_code())) == []


def test_every_query_says_what_it_is_for():
    assert [q.name for q in Q.values() if not q.description] == []


def test_parameters_are_named_and_numbered_in_order_of_first_use():
    sql, params = compile_named("q", "SELECT :b, :a::int, :b FROM t WHERE x = :a")
    assert sql == "SELECT $1, $2::int, $1 FROM t WHERE x = $2"
    assert params == ("b", "a")


def test_casts_strings_identifiers_and_comments_are_not_parameters():
    text = "SELECT x::uuid[], ':no', \"col:umn\", $$ :no $$ -- :no\nFROM t WHERE y = :yes::text"
    sql, params = compile_named("q", text)
    assert params == ("yes",)
    assert sql == "SELECT x::uuid[], ':no', \"col:umn\", $$ :no $$ -- :no\nFROM t WHERE y = $1::text"


def test_positional_parameters_are_refused():
    with pytest.raises(ValueError, match=r"\$1"):
        parse("-- name: q\n-- A query.\nSELECT $1;\n")


def test_arguments_are_bound_by_name_and_all_of_them():
    query = parse("-- name: q\n-- A query.\nSELECT :a, :b;\n")["q"]
    assert query.args({"b": 2, "a": 1}) == (1, 2)
    with pytest.raises(TypeError, match="missing"):
        query.args({"a": 1})
    with pytest.raises(TypeError, match="unknown"):
        query.args({"a": 1, "b": 2, "c": 3})


def test_a_query_defined_twice_is_refused():
    with pytest.raises(ValueError, match="twice"):
        parse("-- name: q\nSELECT 1;\n-- name: q\nSELECT 2;\n")


def test_each_query_is_sent_with_one_position_per_name():
    for query in Q.values():
        positions = {int(n) for n in re.findall(r"\$([0-9]+)", query.sql)}
        assert positions == set(range(1, len(query.params) + 1)), query.name


def test_a_part_is_included_where_a_query_names_it_and_compiled_with_it():
    text = (
        "-- part: rows\n-- Shared rows.\nrows AS (SELECT :a AS a)\n\n"
        "-- part: both\n-- rows, and more.\n-- include: rows\n, more AS (SELECT :b AS b)\n\n"
        "-- name: q\n-- A query.\nWITH\n    -- include: both\nSELECT a, b, :c FROM rows, more;\n"
    )
    query = parse(text)["q"]
    assert query.sql == (
        "-- A query.\nWITH\nrows AS (SELECT $1 AS a)\n, more AS (SELECT $2 AS b)\nSELECT a, b, $3 FROM rows, more;"
    )
    assert query.params == ("a", "b", "c")
    assert query.description == "A query."
    assert "rows" not in parse(text)  # a part is no query


def test_a_part_must_be_defined_above_its_use_and_used():
    with pytest.raises(ValueError, match="no part defined above"):
        parse("-- name: q\n-- A query.\nWITH\n-- include: p\nSELECT 1;\n-- part: p\np AS (SELECT 1)\n")
    with pytest.raises(ValueError, match="included nowhere"):
        parse("-- part: p\np AS (SELECT 1)\n\n-- name: q\n-- A query.\nSELECT 1;\n")
    with pytest.raises(ValueError, match="twice"):
        parse("-- part: q\nq AS (SELECT 1)\n-- name: q\n-- A query.\nWITH\n-- include: q\nSELECT 1;\n")



def test_every_writer_of_the_log_inserts_it_in_its_own_statement():
    writers = [q.name for q in Q.values() if "INSERT INTO events" in q.sql]
    assert sorted(writers) == ["append_events", "append_messages_if_unchanged", "append_turn",
                               "create_turn", "import_events", "insert_conversation"]
    assert not [q.name for q in Q.values() if "write_events(" in q.sql]
