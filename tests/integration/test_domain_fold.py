"""One owner for tree state: the Python fold (tree.evolve) of a random log equals SQL's
fold_conversations (schema/schema.sql), which rebuilds and replays summaries, on real PostgreSQL.

The log is made through the API (creations with and without a system prompt, appends to the head
and under any message, head moves, forks, redactions, answered and failed turns), then read back
row by row and folded in Python.
"""

import uuid

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain import tree
from service.domain.events import Columns, ConversationCreated, ConversationForked, from_columns
from tests.postgres import fetch
from tests.fakeupstream import Fault

OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["create", "append", "branch", "move", "fork", "redact", "turn", "failed turn"]),
        st.integers(min_value=0, max_value=10**6),
        st.integers(min_value=0, max_value=10**6),
    ),
    min_size=1,
    max_size=20,
)


class Log:
    """Drives the API; remembers each conversation's visible messages, to choose parents and targets."""

    def __init__(self, client, upstream):
        self.client, self.upstream = client, upstream
        self.visible: dict[str, list[str]] = {}
        self.own: dict[str, list[str]] = {}

    def apply(self, kind, i, j):
        if kind == "create" or not self.visible:
            return self.create(system=i % 2 == 0)
        cid = list(self.visible)[i % len(self.visible)]
        seen = self.visible[cid]
        target = seen[j % len(seen)] if seen else None
        if kind == "append" or target is None:
            return self.append(cid, None)
        if kind == "branch":
            return self.append(cid, target)
        if kind == "move":
            self.ok(self.client.put(f"/v1/conversations/{cid}/head", json={"message_id": target}), 200)
        elif kind == "fork":
            fork = self.ok(self.client.post(f"/v1/conversations/{cid}/messages/{target}/fork", json={}), 201)
            context = self.ok(self.client.get(f"/v1/conversations/{fork['id']}/context"), 200)
            self.visible[fork["id"]] = [m["id"] for m in context["messages"]]
            self.own[fork["id"]] = []
        elif kind == "redact" and self.own[cid]:
            mid = self.own[cid][j % len(self.own[cid])]
            r = self.client.post(f"/v1/conversations/{cid}/messages/{mid}/redact", json={"reason": "r"})
            assert r.status_code in (200, 201), r.text  # 200: already redacted, nothing recorded
        elif kind == "turn":
            reply = self.ok(self.client.post(f"/v1/conversations/{cid}/turns", json={"content": f"t{i}"}), 201)
            self.seen(cid, reply["user_message"]["id"], reply["assistant_message"]["id"])
        elif kind == "failed turn":
            self.upstream.fail_next(Fault.status_code(500))
            r = self.client.post(f"/v1/conversations/{cid}/turns", json={"content": f"f{i}"})
            assert r.status_code == 502, r.text
            self.seen(cid, r.json()["context"]["user_message_id"])

    def create(self, system):
        body = {"system": "be kind"} if system else {}
        conv = self.ok(self.client.post("/v1/conversations", json=body), 201)
        self.visible[conv["id"]], self.own[conv["id"]] = [], []
        if system:
            self.seen(conv["id"], conv["head_id"])

    def append(self, cid, parent):
        body = {"role": "user", "content": "m", **({} if parent is None else {"parent_message_id": parent})}
        self.seen(cid, self.ok(self.client.post(f"/v1/conversations/{cid}/messages", json=body), 201)["id"])

    def seen(self, cid, *ids):
        self.visible[cid] += ids
        self.own[cid] += ids

    @staticmethod
    def ok(r, status):
        assert r.status_code == status, r.text
        return r.json()


def python_fold(database_url, conversation_ids):
    """Each conversation's summary, folded by tree.evolve from its rows of the log."""
    rows = fetch(
        database_url,
        "SELECT seq, conversation_id, family_id, type, message_id, parent_id, role, depth, body_sha256,"
        " payload::text AS payload, hash FROM events WHERE conversation_id = ANY($1::uuid[]) ORDER BY seq",
        conversation_ids,
    )
    depths = {r["message_id"]: r["depth"] for r in rows if r["type"] == "message_appended"}
    states: dict[uuid.UUID, tree.ConversationState] = {}
    for r in rows:
        event = from_columns(Columns(r["type"], r["message_id"], r["parent_id"], r["role"], r["depth"],
                                     r["body_sha256"], r["payload"]))  # fmt: skip
        state = states.get(r["conversation_id"])
        if isinstance(event, ConversationCreated):
            state = tree.initial_state(tree.Create(
                conversation_id=r["conversation_id"], family_id=r["family_id"], title=None, metadata={}, system=None,
                system_message_id=None,
            ))  # fmt: skip
        elif isinstance(event, ConversationForked):
            fork = tree.Fork(
                conversation_id=r["conversation_id"], family_id=r["family_id"],
                source_conversation_id=event.source_conversation_id, source_message_id=event.source_message_id,
                title=None, metadata={},
            )  # fmt: skip
            base = tree.Node(
                message_id=event.source_message_id, conversation_id=event.source_conversation_id, parent_id=None,
                role="user", depth=depths[event.source_message_id], body_sha256=bytes(32), metadata={},
                has_children=False,
            )  # fmt: skip  (what fork_origin reads of the base: its id and depth)
            state = tree.fork_origin(fork, base)
        assert state is not None
        # The chain is the log's (tree.chained): each row's number and hash.
        states[r["conversation_id"]] = msgspec.structs.replace(
            tree.evolve(state, event), last_seq=r["seq"], last_hash=r["hash"]
        )
    return states


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_the_python_fold_of_a_random_log_equals_sqls_fold_conversations(model_server, upstream, operations):
    upstream.reset()
    _, key = model_server.new_key()
    with model_server.client(key) as client:
        log = Log(client, upstream)
        for operation in operations:
            log.apply(*operation)
    ids = [uuid.UUID(c) for c in log.visible]
    folded = python_fold(model_server.database_url, ids)
    rows = fetch(
        model_server.database_url,
        "SELECT conversation_id, head_id, message_count, leaf_count, forked_from_message_id, base_depth,"
        " last_seq, last_hash FROM fold_conversations($1::uuid[], 9223372036854775807)",
        ids,
    )
    assert len(rows) == len(ids)
    for row in rows:
        s = folded[row["conversation_id"]]
        python = (s.head_id, s.message_count, s.leaf_count, s.base_id, s.base_depth, s.last_seq, s.last_hash)
        assert python == tuple(row.values())[1:], row["conversation_id"]
