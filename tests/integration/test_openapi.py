"""The committed OpenAPI document is the app's, and it documents every error as a problem (on the
OpenAI-compatible door: as OpenAI's error object)."""

import json
from pathlib import Path

from service.api.app import create_app
from service.config import Settings

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def generated() -> dict:
    return json.loads(json.dumps(create_app("postgresql://unused", Settings()).openapi_schema.to_schema()))


def test_committed_document_matches_the_app():
    assert json.loads(COMMITTED.read_text()) == generated(), (
        "openapi/openapi.json is stale: run `convtree openapi --output openapi/openapi.json`"
    )


OPENAI_DOOR = {"/v1/chat/completions", "/v1/models"}  # and every path under /openai/v1


def test_every_operation_documents_its_errors_as_problem_details():
    document = generated()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            errors = {code: r for code, r in operation["responses"].items() if code.startswith(("4", "5"))}
            assert errors, f"{method.upper()} {path} documents no error response"
            for code, response in errors.items():
                if path in OPENAI_DOOR or path.startswith("/openai/v1/"):
                    assert response["content"] == {
                        "application/json": {"schema": {"$ref": "#/components/schemas/OpenAIErrorBody"}}
                    }, (method, path, code)
                else:
                    assert list(response["content"]) == ["application/problem+json"], (method, path, code)
            if path.startswith("/v1/"):
                assert "401" in errors and "422" in errors, f"{method.upper()} {path}"


def test_the_served_document_is_the_committed_one(server):
    with server.client() as client:
        assert client.get("/docs/openapi.json").json() == json.loads(COMMITTED.read_text())
        assert client.get("/docs").status_code == 200


def test_every_streamed_answer_is_documented_with_its_status_and_media_type(api):
    """A route that streams when asked answers 200 `text/event-stream`: the document says so."""
    document = json.loads(COMMITTED.read_text())
    cid = api.post("/v1/conversations", json={"title": "streams"}).json()["id"]
    turn = {"content": "hi", "provider": "echo", "stream": True}
    calls = [("/v1/conversations/{conversation_id}/turns", f"/v1/conversations/{cid}/turns", turn)]
    with api.stream("POST", calls[0][1], json=turn) as r:
        answered = [(calls[0][0], r.status_code, r.headers["content-type"])]
        reply = next(line for line in r.iter_lines() if '"assistant_message_id"' in line)
    reply_id = json.loads(reply.removeprefix("data:").strip())["assistant_message_id"]
    regenerate = f"/v1/conversations/{cid}/messages/{reply_id}/regenerate"
    with api.stream("POST", regenerate, json={"provider": "echo", "stream": True}) as r:
        answered.append(("/v1/conversations/{conversation_id}/messages/{message_id}/regenerate", r.status_code, r.headers["content-type"]))
        r.read()
    chat = {"model": "echo/echo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with api.stream("POST", "/v1/chat/completions", json=chat) as r:
        answered.append(("/v1/chat/completions", r.status_code, r.headers["content-type"]))
        r.read()
    for path, status, media_type in answered:
        documented = document["paths"][path]["post"]["responses"][str(status)]["content"]
        assert media_type.split(";")[0] in documented, (path, status, media_type, list(documented))


def test_every_route_that_takes_a_body_documents_the_answer_to_one_too_large(server):
    """A body over `request_max_body_bytes` is refused with 413 on every route that takes one, and
    the document says so, for each of them."""
    document = generated()
    with_bodies = [
        (path, method)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    ]
    assert with_bodies
    for path, method in with_bodies:
        assert "413" in document["paths"][path][method]["responses"], f"{method.upper()} {path}"
    too_large = b"{" + b" " * (Settings().request_max_body_bytes + 1) + b"}"
    with server.client() as client:
        for path in ("/v1/conversations", "/v1/chat/completions"):
            answer = client.post(path, content=too_large, headers={"content-type": "application/json"})
            assert answer.status_code == 413, (path, answer.status_code)
