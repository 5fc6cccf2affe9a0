"""How a request's JSON body is read: a body with a string convtree cannot keep is refused first."""

from __future__ import annotations

from typing import Any

from litestar import Request

from service.domain import errors, text


class CheckedRequest(Request):  # type: ignore[type-arg]
    """litestar's request, whose JSON body (what every JSON body parameter is decoded from) is
    looked over for U+0000 and lone surrogates before it is decoded, in every field at any depth:
    such a body is a 422 naming the field, and never reaches a handler."""

    async def json(self) -> Any:
        found = text.first_unstorable_in_json(await self.body())
        if found is not None:
            path, why = found
            raise errors.InvalidRequest(f"{path}: the text holds {why}.", parameter=path)
        return await super().json()
