"""The committed OpenAPI document is the app's, and it documents every error as a problem."""

import json
from pathlib import Path

from service.api.app import create_app
from service.config import Settings

COMMITTED = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"


def generated() -> dict:
    return json.loads(json.dumps(create_app("postgresql://unused", Settings()).openapi_schema.to_schema()))


def test_committed_document_matches_the_app():
    assert json.loads(COMMITTED.read_text()) == generated(), (
        "openapi/openapi.json is stale: run `convtree openapi --output openapi/openapi.json`"
    )


def test_every_operation_documents_its_errors_as_problem_details():
    document = generated()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            errors = {code: r for code, r in operation["responses"].items() if code.startswith(("4", "5"))}
            assert errors, f"{method.upper()} {path} documents no error response"
            for code, response in errors.items():
                assert list(response["content"]) == ["application/problem+json"], (method, path, code)
            if path.startswith("/v1/"):
                assert "401" in errors and "422" in errors, f"{method.upper()} {path}"


def test_the_served_document_is_the_committed_one(server):
    with server.client() as client:
        assert client.get("/docs/openapi.json").json() == json.loads(COMMITTED.read_text())
        assert client.get("/docs").status_code == 200
