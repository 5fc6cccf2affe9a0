"""`convtree export` and `convtree import`: a conversation or a whole tenant to files and back,
through the app layer, with the events' ids and hashes unchanged; a progress bar on a terminal."""

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.postgres import fetch
from tests.helpers import create, say
from tests.integration.test_cli import convtree
from tests.integration.test_export import rich_conversation

HASHED = ("conversation_id", "type", "message_id", "parent_id", "role", "depth", "body_sha256", "payload",
          "actor", "request_id", "created_at", "hash", "content")  # fmt: skip


def events(body: bytes) -> list[tuple]:
    """What an export says of each event, less where it stood in the exporting database (`seq`)."""
    return [tuple(json.loads(line).get(k) for k in HASHED) for line in body.splitlines()]


def family(api) -> list[str]:
    """A rich conversation, a fork of it, and a fork of that fork."""
    cid = rich_conversation(api)
    tree = api.get(f"/v1/conversations/{cid}/tree").json()["messages"]
    fork = api.post(f"/v1/conversations/{cid}/messages/{tree[1]['id']}/fork", json={"title": "fork"}).json()["id"]
    answer = say(api, fork, "a fork's own answer", role="assistant")
    deeper = api.post(f"/v1/conversations/{fork}/messages/{answer['id']}/fork", json={"title": "deeper"}).json()["id"]
    say(api, deeper, "deeper still")
    return [cid, fork, deeper]


def test_a_tenant_exported_to_a_directory_imports_into_another_with_identical_events(server, tmp_path):
    tenant, key = server.new_key()
    with server.client(key) as api:
        ids = family(api)
        plain = create(api, title="plain")["id"]
        say(api, plain, "hi")
        ids.append(plain)
    out = tmp_path / "export"
    exported = convtree("export", "--tenant", tenant, "--output", str(out), database_url=server.database_url)
    assert exported.returncode == 0, exported.stderr
    assert f"exported 4 conversation(s) of {tenant}" in exported.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{i}.ndjson" for i in ids)
    assert exported.stderr == ""  # not a terminal: no progress bar

    other, other_key = server.new_key()
    imported = convtree("import", "--tenant", other, str(out), database_url=server.database_url)
    assert imported.returncode == 0, imported.stderr
    assert f"imported 4 conversation(s) into {other}" in imported.stdout

    with server.client(key) as api, server.client(other_key) as there:
        for cid in ids:
            here_body = api.get(f"/v1/conversations/{cid}/export").content
            there_body = there.get(f"/v1/conversations/{cid}/export").content
            assert events(there_body) == events(here_body) == events((out / f"{cid}.ndjson").read_bytes())
            audit = there.get(f"/v1/conversations/{cid}/audit").json()
            assert audit["valid"], audit
            assert audit["head_hash"] == api.get(f"/v1/conversations/{cid}/audit").json()["head_hash"]
        assert there.get(f"/v1/conversations/{ids[2]}").json()["forked_from"]["conversation_id"] == ids[1]
    verified = convtree("verify", "--tenant", other, database_url=server.database_url)
    assert verified.returncode == 0 and "4 valid, 0 invalid" in verified.stdout


def test_one_conversation_goes_through_stdout_and_stdin(server):
    tenant, key = server.new_key()
    with server.client(key) as api:
        cid = rich_conversation(api)
        body = api.get(f"/v1/conversations/{cid}/export").content
    exported = convtree("export", "--tenant", tenant, cid, database_url=server.database_url)
    assert exported.returncode == 0, exported.stderr
    assert events(exported.stdout.encode()) == events(body)
    assert "exported 1 conversation(s)" in exported.stderr  # stdout holds the export alone

    other, other_key = server.new_key()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"DATABASE_URL": server.database_url}
    imported = subprocess.run(
        [sys.executable, "-m", "service", "import", "--tenant", other, "-"],
        input=exported.stdout, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.splitlines()[0] == f"{cid}\timported from stdin"
    with server.client(other_key) as there:
        assert events(there.get(f"/v1/conversations/{cid}/export").content) == events(body)


def test_a_fork_given_before_its_source_is_imported_after_it(server, tmp_path):
    tenant, key = server.new_key()
    with server.client(key) as api:
        ids = family(api)
        for n, cid in enumerate(reversed(ids)):  # the deepest fork first
            (tmp_path / f"{n}.ndjson").write_bytes(api.get(f"/v1/conversations/{cid}/export").content)
    other, _ = server.new_key()
    imported = convtree("import", "--tenant", other, *sorted(str(p) for p in tmp_path.iterdir()),
                        database_url=server.database_url)  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert [line.split("\t")[0] for line in imported.stdout.splitlines()[:3]] == ids


def test_a_refused_file_is_named_and_the_others_are_imported(server, tmp_path):
    tenant, key = server.new_key()
    with server.client(key) as api:
        good = create(api, title="good")["id"]
        bad = create(api, title="bad")["id"]
        say(api, bad, "tamper with me")
        (tmp_path / "good.ndjson").write_bytes(api.get(f"/v1/conversations/{good}/export").content)
        items = [json.loads(line) for line in api.get(f"/v1/conversations/{bad}/export").content.splitlines()]
    items[1]["content"] = "tampered"
    (tmp_path / "bad.ndjson").write_text("".join(json.dumps(i) + "\n" for i in items))
    other, _ = server.new_key()
    result = convtree("import", "--tenant", other, str(tmp_path), database_url=server.database_url)
    assert result.returncode == 1
    [refused] = [line for line in result.stderr.splitlines() if line.startswith("not imported:")]
    assert str(tmp_path / "bad.ndjson") in refused and "InvalidExport, line 2" in refused
    assert "imported 1 conversation(s)" in result.stdout and "1 refused" in result.stdout
    assert fetch(server.database_url, "SELECT count(*) FROM conversations WHERE tenant = $1", other)[0][0] == 1
    again = convtree("import", "--tenant", other, str(tmp_path / "good.ndjson"), database_url=server.database_url)
    assert again.returncode == 1 and "ConversationIdConflict" in again.stderr


def test_exporting_a_conversation_the_tenant_lacks_is_one_line_and_status_1(server, tmp_path):
    tenant, _ = server.new_key()
    missing = "0191b1a2-0000-7000-8000-000000000000"
    result = convtree("export", "--tenant", tenant, missing, "--output", str(tmp_path / "x.ndjson"),
                      database_url=server.database_url)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == f"convtree: conversation {missing} not found in tenant {tenant}"
    assert list(tmp_path.iterdir()) == []  # no empty file left behind
    usage = convtree("export", "--tenant", tenant, database_url=server.database_url)
    assert usage.returncode == 2 and "--output" in usage.stderr


def test_on_a_terminal_export_and_import_show_progress_bars(server, tmp_path):
    tenant, key = server.new_key()
    with server.client(key) as api:
        for i in range(3):
            create(api, title=f"c{i}")
    out = tmp_path / "export"
    exported = on_terminal("export", "--tenant", tenant, "--output", str(out), database_url=server.database_url)
    assert "exporting" in exported and "100%" in exported
    other, _ = server.new_key()
    imported = on_terminal("import", "--tenant", other, str(out), database_url=server.database_url)
    assert "importing" in imported and "100%" in imported


def on_terminal(*args: str, database_url: str) -> str:
    """Run a command with stderr on a pseudo-terminal; what it wrote there."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"DATABASE_URL": database_url}
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "service", *args], stdout=subprocess.PIPE,
                              stderr=follower, env=env, timeout=120, check=False)  # fmt: skip
        os.close(follower)
        follower = -1
        assert proc.returncode == 0
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)


def test_one_conversation_exported_into_a_directory_is_named_by_its_id(server, tmp_path):
    tenant, key = server.new_key()
    with server.client(key) as api:
        cid = create(api, title="one")["id"]
    result = convtree("export", "--tenant", tenant, cid, "--output", str(tmp_path), database_url=server.database_url)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == [f"{cid}.ndjson"]


def test_export_output_that_is_a_file_is_refused_for_a_tenant(server, tmp_path):
    tenant, _ = server.new_key()
    taken = Path(tmp_path / "file")
    taken.write_text("")
    result = convtree("export", "--tenant", tenant, "--output", str(taken), database_url=server.database_url)
    assert result.returncode == 2 and "not a directory" in result.stderr
