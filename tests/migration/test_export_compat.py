"""The hash chain is forever: an export made by an earlier convtree (commit e5a17a2, before keyed
body digests, payload-safe SQL and the other schema changes of revisions 0003–0006) still imports,
verifies, and exports again with every event's payload and hash as they were."""

import json
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "export_e5a17a2.jsonl"
NDJSON = {"Content-Type": "application/x-ndjson"}


def test_an_export_of_an_earlier_convtree_imports_verifies_and_exports_unchanged(api):
    original = FIXTURE.read_bytes()
    lines = [json.loads(line) for line in original.splitlines()]
    assert {line["type"] for line in lines} >= {
        "conversation_created", "message_appended", "head_moved", "message_redacted"
    }
    assert any('"generation"' in line["payload"] for line in lines)  # a model's reply is among them

    imported = api.post("/v1/conversations/import", content=original, headers=NDJSON)
    assert imported.status_code == 201, imported.text
    cid = lines[0]["conversation_id"]

    audit = api.get(f"/v1/conversations/{cid}/audit").json()
    assert audit["valid"] is True and audit["events_checked"] == len(lines), audit
    assert audit["head_hash"] == lines[-1]["hash"]

    again = [json.loads(line) for line in api.get(f"/v1/conversations/{cid}/export").content.splitlines()]
    kept = ("type", "message_id", "parent_id", "role", "depth", "body_sha256", "payload", "actor", "created_at", "hash")
    assert [{k: e[k] for k in kept} for e in again] == [{k: e[k] for k in kept} for e in lines]
