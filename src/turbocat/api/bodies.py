"""YAML in and out: any JSON body may be sent as YAML, and some reads answer in YAML.

``YamlBodyMiddleware`` turns an ``application/yaml`` request body into JSON before routing, so
routes stay plain typed JSON routes (and their OpenAPI stays exact). Responses are YAML where a
route offers it and the client sends ``Accept: application/yaml``.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from turbocat.api.errors import problem

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
YAML_MEDIA = "application/yaml"


def is_yaml(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";")[0].strip().lower() in YAML_TYPES


def wants_yaml(request: Request) -> bool:
    return any(is_yaml(part) for part in request.headers.get("accept", "").split(","))


def yaml_dump(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def document_response(request: Request, document: Any, *, filename: str | None = None) -> Response:
    """``document`` as YAML when the client accepts it, else as JSON."""
    headers = {"content-disposition": f'attachment; filename="{filename}"'} if filename else None
    if wants_yaml(request):
        return Response(yaml_dump(document), media_type=YAML_MEDIA, headers=headers)
    return JSONResponse(document, headers=headers)


class YamlBodyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", [])) if scope["type"] == "http" else {}
        if not is_yaml(headers.get(b"content-type", b"").decode("latin-1")):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        try:
            document = yaml.safe_load(b"".join(chunks)) if any(chunks) else None
            raw = json.dumps(document).encode()
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            response = problem(
                400, "Malformed YAML", f"the request body is not valid YAML: {exc}",
                code="malformed_yaml", instance=scope.get("path"),
            )  # fmt: skip
            await response(scope, receive, send)
            return
        new_headers = [
            (k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")
        ]
        new_headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
        ]
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.app({**scope, "headers": new_headers}, replay, send)
