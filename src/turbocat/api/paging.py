"""Query parameters and response building for cursor-paginated lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel

from turbocat.api.schemas.common import Page
from turbocat.db.listing import PageRequest, SortKey, next_cursor
from turbocat.domain.pagination import DEFAULT_LIMIT, MAX_LIMIT, Cursor

M = TypeVar("M", bound=BaseModel)


async def _page_request(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    sort: Annotated[
        SortKey, Query(description="created_at or name; '-' for descending")
    ] = "-created_at",
) -> PageRequest:
    return PageRequest(limit=limit, cursor=Cursor.decode(cursor) if cursor else None, sort=sort)


PageDep = Annotated[PageRequest, Depends(_page_request)]


def make_page(rows: Sequence[Any], request: PageRequest, model: type[M]) -> Page[M]:
    page_type: Any = Page[model]  # type: ignore[valid-type]
    result: Page[M] = page_type(
        items=[model.model_validate(r) for r in rows[: request.limit]],
        next_cursor=next_cursor(rows, request),
    )
    return result
