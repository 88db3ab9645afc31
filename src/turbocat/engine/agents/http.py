"""The ``api`` kind: one HTTP request (and its redirects), SSRF-protected, as a step.

The config's ``url``, ``method``, ``headers``, ``query``, ``body`` and ``integration_id``
(``domain/agents.ApiConfig``) are templates rendered over the workflow context (input, steps,
vars, execution, item, index) plus ``inputs``, the step's rendered inputs (as in the llm kind's
``user_prompt``). Then the step inputs ``url``, ``method`` and ``body`` replace the rendered
ones and ``headers`` and ``query`` are merged over them, so a saved agent can be called with
per-step values. The output is ``{status, headers, body, url}``.

SSRF protection (SPEC section 10) sits in the connection (``engine/netguard``): the host is
resolved once, the name and every address are checked with ``domain/netpolicy``, and the socket
connects to a checked address while TLS still verifies (and sends SNI for) the original name,
so DNS cannot change between check and connect. Redirects are followed here, not by httpx: at most
``max_redirects``, each hop a new connection through the same guard, and the integration's
credentials, cookies and secret-looking headers are dropped once the origin changes.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from turbocat.domain.agents import ApiConfig
from turbocat.domain.enums import LogLevel
from turbocat.domain.expressions import ROOTS, ExpressionError, JSONValue, compile_template
from turbocat.domain.integrations import CREDENTIAL_FIELDS, AuthKind
from turbocat.domain.redaction import REDACTED, is_secret_key
from turbocat.engine.agents.base import AgentError, Credential, Invocation
from turbocat.engine.netguard import AddressRefused, ResolveError, make_client

__all__ = ["AddressRefused", "ResolveError", "auth_headers", "invoke", "make_client"]
"""``make_client`` and ``ResolveError`` live in ``engine/netguard``; re-exported for callers
that imported them from here."""

TEMPLATED = ("url", "method", "headers", "query", "body", "integration_id")
"""Config fields rendered as templates (over the workflow context plus ``inputs``)."""
TEMPLATE_ROOTS = ROOTS | {"inputs"}
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that get no ``Idempotency-Key`` (they are idempotent already)."""
REDIRECTS = frozenset({301, 302, 303, 307, 308})
EXCERPT_CHARS = 500
"""Characters of a failing response's body quoted in the step's error."""
CLIENT_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
"""Headers a config may not set: a ``Host`` of its own would reach virtual hosts the URL does
not name (and travel along redirects), the others would let a body be framed twice."""
CROSS_ORIGIN_DROP = frozenset({"authorization", "proxy-authorization", "cookie"})

API_KEY_HEADERS: dict[str, tuple[str, str]] = {
    "anthropic": ("x-api-key", ""),
    "google_gemini": ("x-goog-api-key", ""),
    "activecampaign": ("Api-Token", ""),
    "convertkit": ("X-Kit-Api-Key", ""),
    "pipedrive": ("x-api-token", ""),
    "linear": ("Authorization", ""),
    "monday": ("Authorization", ""),
    "make": ("Authorization", "Token "),
    "http": ("X-API-Key", ""),
}
"""Where an ``api_key`` credential goes, per provider: (header, value prefix). Others send
``Authorization: Bearer <key>``; the ``header_name`` setting (``http`` provider) overrides."""

# --- the request ---------------------------------------------------------------------------


def _render(value: Any, scope: Mapping[str, JSONValue], path: str) -> JSONValue:
    """Render every string in ``value`` (never dict keys), naming the field in errors."""
    if isinstance(value, str):
        if "{{" not in value:
            return value
        try:
            return compile_template(value, roots=TEMPLATE_ROOTS).render(scope)
        except ExpressionError as exc:
            raise AgentError("expression_error", f"{path}: {exc.detail}") from None
    if isinstance(value, dict):
        return {k: _render(v, scope, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, scope, f"{path}[{i}]") for i, v in enumerate(value)]
    return value  # type: ignore[no-any-return]


def _render_config(call: Invocation) -> ApiConfig:
    scope = {**call.context, "inputs": call.inputs}
    rendered: dict[str, Any] = dict(call.config)
    for key in TEMPLATED:
        if key in rendered:
            rendered[key] = _render(rendered[key], scope, key)
    for key in ("url", "method", "body"):
        if key in call.inputs:
            rendered[key] = call.inputs[key]
    for key in ("headers", "query"):
        extra = call.inputs.get(key)
        if isinstance(extra, dict):
            base = rendered.get(key)
            rendered[key] = {**(base if isinstance(base, dict) else {}), **extra}
    headers = rendered.get("headers") or {}
    if not isinstance(headers, dict):
        raise AgentError("invalid_request", "headers must be an object of names and values")
    rendered["headers"] = {str(k): _text(v) for k, v in headers.items()}
    if not isinstance(rendered.get("url"), str):
        raise AgentError("invalid_request", f"url rendered to {rendered.get('url')!r}, not text")
    method = str(rendered.get("method", "GET")).upper()
    if method not in METHODS:
        raise AgentError("invalid_request", f"method {method!r} is not one of {sorted(METHODS)}")
    rendered["method"] = method
    try:
        return ApiConfig.model_validate(rendered)
    except ValueError as exc:
        raise AgentError("invalid_request", f"the rendered request is not valid: {exc}") from None


def _text(value: Any) -> str:
    """A rendered header value as text (an expression may give a number or a list)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def auth_headers(credential: Credential) -> dict[str, str]:
    """The headers that carry an integration's credential (see ``API_KEY_HEADERS``)."""
    secrets = credential.secrets
    match credential.auth_kind:
        case "bearer":
            return {"Authorization": f"Bearer {secrets['token']}"}
        case "oauth":
            token_type = secrets.get("token_type") or "Bearer"
            if token_type.lower() == "bearer":
                token_type = "Bearer"
            return {"Authorization": f"{token_type} {secrets['access_token']}"}
        case "basic":
            pair = f"{secrets['username']}:{secrets['password']}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        case "api_key":
            header, prefix = API_KEY_HEADERS.get(credential.provider, ("Authorization", "Bearer "))
            custom = credential.settings.get("header_name")
            if isinstance(custom, str) and custom.strip():
                header, prefix = custom.strip(), ""
            return {header: prefix + secrets["api_key"]}
    raise AgentError(
        "invalid_request", f"auth kind {credential.auth_kind!r} is not supported by api steps"
    )


def _query_value(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, list):
        return [item for v in value for item in (_query_value(v) or [])]
    if isinstance(value, dict):
        return [json.dumps(value, separators=(",", ":"))]
    return [str(value)]


QueryItems = list[tuple[str, str | int | float | bool | None]]


def _query(query: Mapping[str, Any]) -> QueryItems:
    return [(k, v) for k, value in query.items() for v in (_query_value(value) or [])]


def _encode_body(body: Any, headers: dict[str, str]) -> bytes | None:
    """The body as bytes; a Content-Type is added when the config sets none."""
    if body is None:
        return None
    content_type = _get(headers, "content-type")
    if isinstance(body, str):
        if content_type is None:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        return body.encode()
    if (
        isinstance(body, dict)
        and content_type is not None
        and content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded"
    ):
        return str(httpx.QueryParams(_query(body))).encode()
    if content_type is None:
        headers["Content-Type"] = "application/json"
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _get(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _without(headers: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    drop = {n.lower() for n in names}
    return {k: v for k, v in headers.items() if k.lower() not in drop}


def _check_headers(headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if name.lower() in CLIENT_HEADERS:
            raise AgentError(
                "invalid_request", f"header {name!r} is set by turbocat from the URL and body"
            )
        if not name or any(c in name for c in " \t\r\n:\0") or any(c in value for c in "\r\n\0"):
            raise AgentError(
                "invalid_request", f"header {name!r} has a name or value HTTP cannot carry"
            )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def _display(url: httpx.URL) -> str:
    """A URL fit for logs and errors: no query string (it may carry a key), no user info."""
    return str(url.copy_with(query=None, fragment=None, username=None, password=None))


def _target(raw: str, credential: Credential | None) -> httpx.URL:
    if "://" not in raw and credential is not None:
        base = credential.settings.get("base_url")
        if isinstance(base, str) and base:
            raw = base.rstrip("/") + "/" + raw.lstrip("/")
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise AgentError("invalid_request", f"url is not valid: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise AgentError("invalid_request", "url must be an absolute http:// or https:// URL")
    if url.userinfo:
        raise AgentError(
            "invalid_request", "url must not carry credentials; put them in an integration"
        )
    return url


def retry_after_seconds(value: str | None, now: float, ceiling: float) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from ``now``, capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = when.timestamp() - now
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), ceiling)


def _why(exc: Exception) -> str:
    """An exception as a message; httpx's read/write errors often have none of their own."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if not text and cause is not None:
        text = str(cause)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _secret_values(credential: Credential | None) -> list[str]:
    """The credential's secret fields (a password, not the user name beside it)."""
    if credential is None:
        return []
    try:
        fields = CREDENTIAL_FIELDS[AuthKind(credential.auth_kind)]
    except ValueError:
        return list(credential.secrets.values())
    secret = {f.name for f in fields if f.secret}
    return [v for k, v in credential.secrets.items() if k in secret]


class _Redactor:
    """Replaces the credential's secret values wherever a message might quote them."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def value(self, value: JSONValue) -> JSONValue:
        """``value`` with every string redacted (a response that echoes the credential)."""
        if not self.secrets:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value


async def _read_body(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise AgentError(
            "response_too_large",
            f"the response declares {int(declared)} bytes, more than max_response_bytes={limit}",
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():  # decompressed: a gzip bomb counts in full
        size += len(chunk)
        if size > limit:
            raise AgentError(
                "response_too_large",
                f"the response body is larger than max_response_bytes={limit}",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode(response: httpx.Response, raw: bytes, mode: str, method: str) -> JSONValue:
    if method == "HEAD":
        return None
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    looks_json = content_type == "application/json" or content_type.endswith("+json")
    if mode == "json" or (mode == "auto" and looks_json):
        if not raw.strip():
            return None
        try:
            parsed: JSONValue = json.loads(raw, parse_constant=_reject_constant)
            return parsed
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            if mode == "json":
                raise AgentError(
                    "invalid_response", f"the response is not JSON ({exc})", retryable=False
                ) from None
    try:
        return raw.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name
        return raw.decode("utf-8", errors="replace")


async def _exchange(
    client: httpx.AsyncClient,
    spec: ApiConfig,
    url: httpx.URL,
    headers: dict[str, str],
    content: bytes | None,
    secret_headers: set[str],
    limit: int,
    trail: list[httpx.URL],
) -> tuple[httpx.Response, bytes, int]:
    """Send the request and follow redirects; returns the last response, its body, hops.
    ``trail`` gets each URL requested, so an error can name the hop that failed."""
    method, first_origin, hops = spec.method, _origin(url), 0
    params = _query(spec.query)
    if params:  # added to the URL's own query, not replacing it
        url = url.copy_merge_params(params)
    while True:
        trail.append(url)
        if _origin(url) != first_origin:
            headers = _without(headers, CROSS_ORIGIN_DROP | secret_headers)
        request = client.build_request(method, url, headers=headers, content=content)
        response = await client.send(request, stream=True)
        try:
            location = response.headers.get("location")
            if not (spec.follow_redirects and response.status_code in REDIRECTS and location):
                return response, await _read_body(response, limit), hops
            if hops >= spec.max_redirects:
                raise AgentError(
                    "too_many_redirects",
                    f"{_display(url)} redirected more than max_redirects={spec.max_redirects} "
                    "times",
                )
        finally:
            await response.aclose()
        hops += 1
        url = _target(str(request.url.join(location)), None)
        if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
            method = "GET" if method != "HEAD" else "HEAD"
            content = None
            headers = _without(headers, ("content-type", "content-length"))


async def invoke(call: Invocation) -> JSONValue:
    """The runtime entry point (see agents/base.py)."""
    settings = call.settings.http
    spec = _render_config(call)
    credential = None
    if spec.integration_id is not None:
        credential = await call.services.credential(spec.integration_id)
    url = _target(spec.url, credential)

    headers = dict(spec.headers)
    if _get(headers, "user-agent") is None:
        headers["User-Agent"] = settings.user_agent
    key = _get(headers, "idempotency-key")
    if key is None and spec.method not in SAFE_METHODS:
        headers["Idempotency-Key"] = call.idempotency_key
    elif key == "":  # an explicit empty value turns the header off
        headers = _without(headers, ("idempotency-key",))
    secret_headers = {k.lower() for k in headers if is_secret_key(k)}
    auth = auth_headers(credential) if credential is not None else {}
    headers = {**_without(headers, auth), **auth}
    secret_headers |= {k.lower() for k in auth}
    # a server may echo the credential back: never quote it in a message
    redact = _Redactor([*_secret_values(credential), *auth.values(),
                        *(v.split(" ", 1)[-1] for v in auth.values())])  # fmt: skip
    content = _encode_body(spec.body, headers)
    _check_headers(headers)

    timeout = spec.timeout_ms / 1000
    if call.timeout_seconds is not None:
        timeout = min(timeout, call.timeout_seconds)
    limit = min(spec.max_response_bytes, settings.max_response_bytes)
    started = time.monotonic()
    trail = [url]
    try:
        async with asyncio.timeout(timeout), make_client(settings, timeout) as client:
            response, raw, hops = await _exchange(
                client, spec, url, headers, content, secret_headers, limit, trail
            )
            body = _decode(response, raw, spec.response_type, response.request.method)
    except AddressRefused as exc:
        raise AgentError(
            "ssrf_blocked", str(exc), details={"host": exc.host, "address": exc.address}
        ) from None
    except (TimeoutError, httpx.TimeoutException):
        raise AgentError(
            "http_timeout",
            f"{spec.method} {_display(trail[-1])} got no complete response within "
            f"{round(timeout * 1000)} ms",
            retryable=True,
        ) from None
    except ResolveError as exc:
        raise AgentError("http_connect", str(exc), retryable=True) from None
    except httpx.ConnectError as exc:
        raise AgentError(
            "http_connect",
            redact(f"could not connect to {_display(trail[-1])}: {_why(exc)}"),
            retryable=True,
        ) from None
    except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
        raise AgentError("invalid_request", redact(f"the request is not valid: {exc}")) from None
    except httpx.HTTPError as exc:  # read/write errors, a server breaking the protocol
        raise AgentError(
            "http_error",
            redact(f"{spec.method} {_display(trail[-1])} failed: {_why(exc)}"),
            retryable=True,
        ) from None
    elapsed_ms = round((time.monotonic() - started) * 1000)

    status, final = response.status_code, response.url
    call.services.log(
        LogLevel.INFO,
        f"{response.request.method} {_display(final)} -> {status} in {elapsed_ms} ms",
        {"status": status, "redirects": hops, "bytes": len(raw), "duration_ms": elapsed_ms},
    )
    body = redact.value(body)  # step outputs are stored: never keep an echoed credential
    output: dict[str, JSONValue] = {
        "status": status,
        "headers": redact.value(dict(response.headers.items())),
        "body": body,
        "url": str(final),
    }
    failing = status in spec.fail_on_status if spec.fail_on_status is not None else status >= 400
    retrying = status in spec.retry_on_status
    if not (failing or retrying):
        return output
    excerpt = redact((body if isinstance(body, str) else json.dumps(body))[:EXCERPT_CHARS])
    message = f"{response.request.method} {_display(final)} answered {status}"
    if response.reason_phrase:
        message += f" {response.reason_phrase}"
    raise AgentError(
        "http_status",
        f"{message}: {excerpt}" if excerpt and excerpt != "null" else message,
        retryable=retrying,
        retry_after=retry_after_seconds(
            response.headers.get("retry-after"), time.time(), settings.max_retry_after_seconds
        )
        if retrying
        else None,
        details={"status": status, "body": excerpt},
    )
