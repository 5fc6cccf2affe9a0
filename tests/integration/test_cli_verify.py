"""`convtree verify --tenant`: every conversation of a tenant audited, through the app layer."""

from tests.integration.test_audit import behind_the_back
from tests.integration.test_cli import convtree
from tests.postgres import fetch



def test_verify_audits_every_conversation_of_a_tenant_and_names_the_broken_one(server):
    tenant, key = server.new_key()
    with server.client(key) as api:
        ids = [api.post("/v1/conversations", json={"title": f"c{i}", "system": "s"}).json()["id"] for i in range(3)]
        api.post(f"/v1/conversations/{ids[1]}/messages", json={"role": "user", "content": "hi"}).raise_for_status()
    good = convtree("verify", "--tenant", tenant, database_url=server.database_url)
    assert good.returncode == 0, good.stderr
    assert f"verified 3 conversation(s) of {tenant}: 3 valid, 0 invalid" in good.stdout
    seq = fetch(server.database_url, "SELECT max(seq) FROM events WHERE conversation_id = $1::uuid", ids[1])[0][0]
    behind_the_back(server.database_url, "UPDATE events SET actor = 'mallory' WHERE seq = $1", seq)
    bad = convtree("verify", "--tenant", tenant, database_url=server.database_url)
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[0].startswith(f"{ids[1]}\tinvalid at seq {seq}")
    assert "2 valid, 1 invalid" in bad.stdout


def test_verify_of_a_tenant_without_conversations_verifies_none(databases):
    result = convtree("verify", "--tenant", "nobody", database_url=databases.migrated())
    assert result.returncode == 0, result.stderr
    assert "verified 0 conversation(s) of nobody" in result.stdout
