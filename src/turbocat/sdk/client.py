"""A synchronous HTTP client for the turbocat REST API (``/api/v1``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8420"


class ApiError(Exception):
    """An error response; ``problem`` is the RFC 9457 body when the server sent one."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
        fields = "; ".join(
            f"{e.get('field')}: {e.get('message')}" for e in problem.get("errors") or []
        )
        super().__init__(f"{detail}{f' ({fields})' if fields else ''}")


class Client:
    """Talks to one turbocat server as one caller (an API key or a login token).

    ``url`` and ``api_key`` default to ``TURBOCAT_URL`` and ``TURBOCAT_API_KEY``.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        organization_id: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "turbocat-sdk"}
        key = api_key or os.environ.get("TURBOCAT_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if organization_id:
            headers["X-Organization-Id"] = organization_id
        self._http = httpx.Client(
            base_url=(url or os.environ.get("TURBOCAT_URL") or DEFAULT_URL).rstrip("/"),
            headers=headers,
            timeout=timeout,
            transport=transport,
        )
        self.workflows = Workflows(self)
        self.agents = Agents(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request to ``/api/v1{path}``; error statuses raise :class:`ApiError`."""
        try:
            response = self._http.request(method, f"/api/v1{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, {"detail": f"cannot reach {self._http.base_url}: {exc}"}) from exc
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:500] or response.reason_phrase}
            raise ApiError(response.status_code, problem if isinstance(problem, dict) else {})
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    def usage(
        self,
        *,
        from_: str | None = None,
        to: str | None = None,
        metrics: list[str] | None = None,
        granularity: str = "day",
    ) -> dict[str, Any]:
        """The organization's usage (``GET /usage``; owners and admins, or a key with
        ``usage:read``). ``from_``/``to`` are UTC dates (YYYY-MM-DD, ``to`` excluded)."""
        params: dict[str, Any] = {"granularity": granularity}
        if from_:
            params["from"] = from_
        if to:
            params["to"] = to
        if metrics:
            params["metric"] = metrics
        return dict(self.json("GET", "/usage", params=params))

    def subscription(self) -> dict[str, Any]:
        """The organization's plan, limits, quota use this month and subscription."""
        return dict(self.json("GET", "/subscription"))

    def paginate(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paginated list."""
        query = dict(params or {})
        while True:
            page = self.json("GET", path, params=query)
            yield from page["items"]
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]


def _is_id(ref: str) -> bool:
    try:
        uuid.UUID(ref)
    except ValueError:
        return False
    return True


class Workflows:
    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self, **filters: Any) -> Iterator[dict[str, Any]]:
        return self._c.paginate("/workflows", {k: v for k, v in filters.items() if v is not None})

    def get(self, ref: str) -> dict[str, Any]:
        """By id, or by kebab name (the latest version)."""
        path = f"/workflows/{ref}" if _is_id(ref) else f"/workflows/by-name/{ref}"
        result: dict[str, Any] = self._c.json("GET", path)
        return result

    def create(self, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._c.json("POST", "/workflows", json=body)
        return result

    def update(self, workflow_id: str, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._c.json("PATCH", f"/workflows/{workflow_id}", json=changes)
        return result

    def delete(self, workflow_id: str) -> None:
        self._c.request("DELETE", f"/workflows/{workflow_id}")

    def export(self, ref: str, *, yaml: bool = False) -> str:
        """The portable file of a workflow, as YAML or JSON text."""
        workflow_id = self.get(ref)["id"]
        accept = "application/yaml" if yaml else "application/json"
        return self._c.request(
            "GET", f"/workflows/{workflow_id}/export", headers={"Accept": accept}
        ).text

    def run(
        self,
        ref: str,
        input: dict[str, Any] | None = None,
        *,
        wait: float | None = None,
        idempotency_key: str | None = None,
        manual: bool = False,
    ) -> dict[str, Any]:
        """Start an execution of a workflow (by id, or by kebab name: its latest version).

        With ``wait``, the server holds the answer up to that many seconds: the execution as it
        ended (with ``output_data``), or as it is when the time ran out (status still live).
        The same ``idempotency_key`` with the same input returns the same execution."""
        workflow_id = ref if _is_id(ref) else self.get(ref)["id"]
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        params = {"wait": wait} if wait else {}
        result: dict[str, Any] = self._c.json(
            "POST", f"/workflows/{workflow_id}/executions", headers=headers, params=params,
            json={"input": input or {}, "trigger_type": "manual" if manual else "api"},
            timeout=(wait or 0) + 30,
        )  # fmt: skip
        return result

    def import_(self, content: str, *, yaml: bool = False, update: bool = False) -> dict[str, Any]:
        """Create (or with ``update``, version) a workflow from an exported file's text."""
        content_type = "application/yaml" if yaml else "application/json"
        result: dict[str, Any] = self._c.json(
            "POST", "/workflows/import", content=content.encode(),
            headers={"Content-Type": content_type}, params={"update": update},
        )  # fmt: skip
        return result


class Agents:
    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self, **filters: Any) -> Iterator[dict[str, Any]]:
        return self._c.paginate("/agents", {k: v for k, v in filters.items() if v is not None})

    def get(self, agent_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._c.json("GET", f"/agents/{agent_id}")
        return result

    def create(self, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._c.json("POST", "/agents", json=body)
        return result
