"""The one place a request's JSON body is decoded: it is looked over on the raw bytes first."""

from __future__ import annotations

from typing import Any

from litestar import Request

from service.domain import errors, text
from service.domain.nesting import check_json_depth


class CheckedRequest(Request):  # type: ignore[type-arg]
    """litestar's request, whose JSON body (what every JSON body parameter is decoded from) never
    reaches the (recursive) decoder nested too deep (400), and is looked over for U+0000 and lone
    surrogates in every field at any depth (422 naming the field) before it is decoded."""

    async def json(self) -> Any:
        body = await self.body()
        check_json_depth(body)
        found = text.first_unstorable_in_json(body)
        if found is not None:
            path, why = found
            raise errors.InvalidRequest(f"{path}: the text holds {why}.", parameter=path)
        return await super().json()
