"""The command line's expected failures: one line on stderr, an exit code of its own, no traceback."""

import socket
from urllib.parse import urlsplit, urlunsplit

import pytest

from service import exits
from tests.integration.test_cli import convtree


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_one_line_failure(result, code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("convtree: ")
    for word in words:
        assert word in lines[0]


def with_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


@pytest.mark.parametrize("command", [("migrate",), ("info",), ("keys", "list"), ("keys", "create", "--tenant", "t")])
def test_an_unreachable_database_is_one_line_and_its_own_exit_code(command):
    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/postgres"
    result = convtree(*command, database_url=url)
    assert_one_line_failure(result, exits.DATABASE_UNREACHABLE, "cannot reach the database", "127.0.0.1")
    assert "secret" not in result.stderr


def test_serve_with_an_unreachable_database_is_one_line():
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    result = convtree("serve", "--port", str(free_port()), database_url=url)
    assert_one_line_failure(result, exits.DATABASE_UNREACHABLE, "cannot reach the database")


@pytest.mark.parametrize("command", [("migrate",), ("info",), ("keys", "list"), ("serve",)])
def test_credentials_the_database_refuses_are_one_line_and_their_own_exit_code(databases, command):
    url = with_user(databases.migrated(), "convtree_no_such_user")
    if command == ("serve",):
        command = ("serve", "--port", str(free_port()))
    result = convtree(*command, database_url=url)
    assert_one_line_failure(result, exits.WRONG_CREDENTIALS, "refused the credentials", "convtree_no_such_user")


@pytest.mark.parametrize("command", [("keys", "list"), ("keys", "revoke", "--tenant", "t", "--name", "n")])
def test_commands_on_an_unmigrated_database_ask_for_a_migration(databases, command):
    result = convtree(*command, database_url=databases.empty())
    assert_one_line_failure(result, exits.MIGRATION_NEEDED, "convtree migrate", "none")


def test_a_taken_port_is_one_line_and_its_own_exit_code(databases):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = convtree("serve", "--port", str(port), database_url=databases.migrated())
    assert_one_line_failure(result, exits.PORT_TAKEN, f"127.0.0.1:{port}", "taken")


def test_urls_are_printed_without_their_password():
    assert exits.public_url("postgresql://app:s3cret@db.example:5433/convtree") == "postgresql://app@db.example:5433/convtree"
    assert exits.public_url("postgresql://app@db/convtree") == "postgresql://app@db/convtree"
