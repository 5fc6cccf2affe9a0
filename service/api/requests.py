"""The one place a request's JSON body is decoded: its nesting is checked on the raw bytes first."""

from __future__ import annotations

from typing import Any

from litestar import Request

from service.domain.nesting import check_json_depth


class JSONCheckedRequest(Request[Any, Any, Any]):
    """litestar's request, whose JSON body never reaches the (recursive) decoder nested too deep."""

    async def json(self) -> Any:
        check_json_depth(await self.body())
        return await super().json()
