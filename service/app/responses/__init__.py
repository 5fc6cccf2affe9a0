"""The Responses API's use cases: creating a response (a turn), reading, listing and deleting it."""

from service.app.responses.background import cancel_response, follow_response
from service.app.responses.create import Begun, NewResponse, Retried, begin_response
from service.app.responses.references import referenced_items
from service.app.responses.read import (
    Found,
    delete_response,
    found_after,
    get_response,
    input_items,
    recorded,
    status_of,
)

__all__ = [
    "Begun",
    "Found",
    "NewResponse",
    "Retried",
    "begin_response",
    "cancel_response",
    "follow_response",
    "delete_response",
    "found_after",
    "get_response",
    "input_items",
    "recorded",
    "referenced_items",
    "status_of",
]
