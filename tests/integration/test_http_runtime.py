"""The ``api`` kind (and ``engine/netguard``) against a real HTTP server on 127.0.0.1: requests,
auth, redirects, limits, status handling and SSRF protection (which the server's own address
exercises)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.local_http import LocalServer, local_server
from turbocat.config import HttpRuntimeSettings, RuntimeSettings
from turbocat.domain.enums import LogLevel
from turbocat.domain.netpolicy import IPAddress
from turbocat.engine import netguard
from turbocat.engine.agents import http
from turbocat.engine.agents.base import AgentError, Credential, Invocation, RecordingServices

LOOPBACK = ["127.0.0.1/32"]
CONTEXT: dict[str, Any] = {
    "input": {"name": "Ada", "n": 3},
    "vars": {"tag": "vip"},
    "steps": {},
    "execution": {"id": "e1"},
}


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with local_server() as s:
        yield s


def call(
    config: dict[str, Any],
    *,
    allow: list[str] | None = None,
    inputs: dict[str, Any] | None = None,
    credential: Credential | None = None,
    timeout_seconds: float | None = None,
    **settings: Any,
) -> Invocation:
    services = RecordingServices()
    if credential is not None:
        services.credentials[credential.integration_id] = credential
    return Invocation(
        kind="api", config=config, inputs=inputs or {}, context=CONTEXT, services=services,
        idempotency_key="exec-1:fetch:0", execution_id=uuid.uuid4(),
        organization_id=uuid.uuid4(), step_key="fetch", timeout_seconds=timeout_seconds,
        settings=RuntimeSettings(
            http=HttpRuntimeSettings(allow=LOOPBACK if allow is None else allow, **settings)
        ),
    )  # fmt: skip


async def run(config: dict[str, Any], **kwargs: Any) -> Any:
    return await http.invoke(call(config, **kwargs))


async def fails(config: dict[str, Any], **kwargs: Any) -> AgentError:
    with pytest.raises(AgentError) as caught:
        await run(config, **kwargs)
    return caught.value


def credential(auth_kind: str, secrets: dict[str, str], **settings: str) -> Credential:
    return Credential(uuid.uuid4(), "http", auth_kind, secrets, settings)


# --- requests and responses --------------------------------------------------------------------


async def test_templated_get_with_query_and_headers(server: LocalServer) -> None:
    out = await run({
        "url": server.url("/echo?fixed=1"),
        "query": {"who": "{{ input.name }}", "n": "{{ input.n }}", "tags": ["a", "b"],
                  "skip": None, "flag": True},
        "headers": {"X-Tag": "{{ vars.tag }}", "X-N": "{{ input.n }}"},
    })  # fmt: skip
    assert out["status"] == 200 and out["url"].startswith(server.url("/echo?"))
    assert out["headers"]["content-type"] == "application/json"
    body = out["body"]
    assert body["method"] == "GET" and body["path"] == "/echo"
    assert body["query"] == {"fixed": ["1"], "who": ["Ada"], "n": ["3"], "tags": ["a", "b"],
                             "flag": ["true"]}  # fmt: skip
    assert body["headers"]["X-Tag"] == "vip" and body["headers"]["X-N"] == "3"
    assert body["headers"]["User-Agent"] == "turbocat"
    assert "Idempotency-Key" not in body["headers"]  # GET is idempotent already


async def test_post_json_body_carries_the_engines_idempotency_key(server: LocalServer) -> None:
    invocation = call({
        "method": "{{ 'post' }}", "url": server.url("/echo"),
        "body": {"name": "{{ input.name }}", "n": "{{ input.n }}", "tags": ["{{ vars.tag }}"]},
    })  # fmt: skip
    out = await http.invoke(invocation)
    seen = server.requests[-1]
    assert seen.method == "POST" and seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Idempotency-Key"] == "exec-1:fetch:0"
    assert out["body"]["body"] == '{"name":"Ada","n":3,"tags":["vip"]}'
    services = invocation.services
    assert isinstance(services, RecordingServices)
    level, message, meta = services.logs[-1]
    assert level is LogLevel.INFO and message.startswith(f"POST {server.url('/echo')} -> 200 in ")
    assert meta["status"] == 200 and meta["redirects"] == 0


async def test_text_and_form_bodies_and_step_input_overrides(server: LocalServer) -> None:
    await run({"method": "PUT", "url": server.url("/echo"), "body": "plain {{ input.name }}",
               "headers": {"Idempotency-Key": ""}})  # fmt: skip
    seen = server.requests[-1]
    assert seen.body == b"plain Ada" and seen.headers["Content-Type"].startswith("text/plain")
    assert "Idempotency-Key" not in seen.headers  # an explicit empty value turns it off
    await run({
        "method": "POST", "url": server.url("/echo"), "body": {"a": "1 2", "b": ["x", "y"]},
        "headers": {"content-type": "application/x-www-form-urlencoded"},
    })  # fmt: skip
    assert server.requests[-1].body == b"a=1+2&b=x&b=y"
    out = await run(
        {"url": server.url("/text"), "query": {"a": "1"}, "headers": {"X-A": "config"}},
        inputs={"url": server.url("/echo"), "method": "PATCH", "body": {"from": "inputs"},
                "query": {"b": "2"}, "headers": {"X-B": "input"}},
    )  # fmt: skip
    assert out["body"]["method"] == "PATCH" and out["body"]["query"] == {"a": ["1"], "b": ["2"]}
    assert out["body"]["headers"]["X-A"] == "config" and out["body"]["headers"]["X-B"] == "input"
    assert out["body"]["body"] == '{"from":"inputs"}'


async def test_templates_see_the_step_inputs_and_name_the_field_in_errors(
    server: LocalServer,
) -> None:
    out = await run(
        {"url": server.url("/echo?id={{ inputs.id }}"), "headers": {"X-Who": "{{ input.name }}"}},
        inputs={"id": 42},
    )
    assert out["body"]["query"] == {"id": ["42"]} and out["body"]["headers"]["X-Who"] == "Ada"
    err = await fails({"url": server.url("/echo"), "query": {"q": "{{ nope(1) }}"}})
    assert err.kind == "expression_error" and err.message.startswith("query.q: ")


async def test_response_types(server: LocalServer) -> None:
    text = await run({"url": server.url("/text")})
    assert text["body"] == "hello" and text["headers"]["content-type"].startswith("text/plain")
    as_text = await run({"url": server.url("/echo"), "response_type": "text"})
    assert isinstance(as_text["body"], str) and as_text["body"].startswith("{")
    err = await fails({"url": server.url("/text"), "response_type": "json"})
    assert err.kind == "invalid_response" and not err.retryable
    head = await run({"method": "HEAD", "url": server.url("/echo")})
    assert head["status"] == 200 and head["body"] is None


async def test_each_auth_kind_and_the_integration_base_url(server: LocalServer) -> None:
    cases = [
        (credential("bearer", {"token": "tok-123"}), "Authorization", "Bearer tok-123"),
        (
            credential("basic", {"username": "ada", "password": "pw:x"}),
            "Authorization",
            "Basic " + base64.b64encode(b"ada:pw:x").decode(),
        ),
        (credential("api_key", {"api_key": "key-0001"}), "X-API-Key", "key-0001"),
        (
            credential("api_key", {"api_key": "key-0002"}, header_name="X-Custom"),
            "X-Custom",
            "key-0002",
        ),
        (
            Credential(uuid.uuid4(), "openai", "api_key", {"api_key": "sk-0009"}, {}),
            "Authorization",
            "Bearer sk-0009",
        ),
        (
            Credential(uuid.uuid4(), "anthropic", "api_key", {"api_key": "sk-000a"}, {}),
            "x-api-key",
            "sk-000a",
        ),
        (credential("oauth", {"access_token": "at-00001"}), "Authorization", "Bearer at-00001"),
    ]
    for cred, header, value in cases:
        config = {"url": server.url("/echo"), "integration_id": str(cred.integration_id),
                  "headers": {header: "from config, replaced"}}  # fmt: skip
        out = await run(config, credential=cred)
        sent = {k.lower(): v for k, v in server.requests[-1].headers.items()}
        assert sent[header.lower()] == value, (cred.auth_kind, sent)
        # the echo comes back in the output, which is stored: the credential is redacted there
        echoed = {k.lower(): v for k, v in out["body"]["headers"].items()}
        assert echoed[header.lower()] != value and "[redacted]" in echoed[header.lower()]
    with_base = credential("bearer", {"token": "t"}, base_url=server.url(""))
    out = await run(
        {"url": "/echo", "integration_id": "{{ inputs.crm }}"},
        credential=with_base,
        inputs={"crm": str(with_base.integration_id)},
    )
    assert out["body"]["path"] == "/echo"
    missing = await fails({"url": server.url("/echo"), "integration_id": str(uuid.uuid4())})
    assert missing.kind == "integration_unavailable"


# --- statuses ----------------------------------------------------------------------------------


async def test_statuses_fail_or_retry_with_retry_after(server: LocalServer) -> None:
    err = await fails({"url": server.url("/status/429?retry_after=7")})
    assert err.kind == "http_status" and err.retryable and err.retry_after == 7
    assert err.details["status"] == 429 and "status 429" in err.details["body"]
    assert err.message.startswith(f"GET {server.url('/status/429')} answered 429 Too Many")
    date = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)).strftime(
        "%a, %d %b %Y %H:%M:%S GMT"
    )
    err = await fails({"url": server.url("/status/503"), "query": {"retry_after": date}})
    assert err.retryable and err.retry_after is not None and 100 < err.retry_after <= 120
    err = await fails({"url": server.url("/status/503?retry_after=999999")})
    assert err.retry_after == 3600  # the operator's ceiling
    err = await fails({"url": server.url("/status/404")})
    assert err.kind == "http_status" and not err.retryable and err.retry_after is None
    err = await fails({"url": server.url("/status/500"), "retry_on_status": [500]})
    assert err.retryable
    # with fail_on_status, only those fail; other statuses are answers the workflow handles
    out = await run({"url": server.url("/status/404"), "fail_on_status": [500]})
    assert out["status"] == 404 and out["body"] == {"error": "status 404", "echo": ""}
    err = await fails({"url": server.url("/status/201"), "fail_on_status": [201]})
    assert err.details["status"] == 201 and not err.retryable


async def test_secrets_echoed_by_a_server_are_redacted_in_errors(server: LocalServer) -> None:
    cred = credential("bearer", {"token": "very-secret-token"})
    err = await fails(
        {"method": "POST", "url": server.url("/status/400"), "integration_id":
         str(cred.integration_id), "body": "I saw very-secret-token"},
        credential=cred,
    )  # fmt: skip
    assert "very-secret-token" not in err.message and "[redacted]" in err.message
    assert "very-secret-token" not in str(err.details)


# --- redirects ---------------------------------------------------------------------------------


async def test_redirects_are_followed_bounded_and_method_rewritten(server: LocalServer) -> None:
    out = await run({"url": server.url("/chain/3")})
    assert out["status"] == 200 and out["url"] == server.url("/chain/0")
    err = await fails({"url": server.url("/chain/3"), "max_redirects": 2})
    assert err.kind == "too_many_redirects" and not err.retryable
    assert len(server.requests) == 4 + 3  # three hops then the one past the limit
    out = await run({"url": server.url("/chain/1"), "follow_redirects": False})
    assert out["status"] == 302 and out["headers"]["location"] == "/chain/0"
    to_echo = server.url("/echo")
    out = await run({"method": "POST", "url": server.url(f"/redirect?code=303&to={to_echo}"),
                     "body": {"a": 1}})  # fmt: skip
    assert out["body"]["method"] == "GET" and out["body"]["body"] == ""
    assert "Content-Type" not in out["body"]["headers"]
    out = await run({"method": "POST", "url": server.url(f"/redirect?code=307&to={to_echo}"),
                     "body": {"a": 1}})  # fmt: skip
    assert out["body"]["method"] == "POST" and out["body"]["body"] == '{"a":1}'
    err = await fails({"url": server.url("/redirect?to=file:///etc/passwd")})
    assert err.kind == "invalid_request"


async def test_credentials_are_dropped_when_a_redirect_changes_origin(server: LocalServer) -> None:
    cred = credential("bearer", {"token": "tok-x"})
    config = {"integration_id": str(cred.integration_id),
              "headers": {"X-Api-Token": "t2", "Cookie": "s=1", "X-Plain": "kept"}}  # fmt: skip
    same = server.url(f"/redirect?to={server.url('/echo')}")
    await run({**config, "url": same}, credential=cred)
    assert server.requests[-1].headers["Authorization"] == "Bearer tok-x"  # same origin keeps it
    other = server.url(f"/redirect?to={server.url('/echo', host='localhost')}")
    out = await run({**config, "url": other}, credential=cred, allow=[*LOOPBACK, "localhost"])
    sent = out["body"]["headers"]
    assert out["url"].startswith("http://localhost:")
    assert "Authorization" not in sent and "Cookie" not in sent and "X-Api-Token" not in sent
    assert sent["X-Plain"] == "kept"
    assert server.requests[-2].headers["Authorization"] == "Bearer tok-x"  # the first hop had it


async def test_each_redirect_hop_is_checked_again(server: LocalServer) -> None:
    # localhost is allowed by name; the redirect target 127.0.0.1 is not on the allow list
    start = server.url(f"/redirect?to={server.url('/echo')}", host="localhost")
    err = await fails({"url": start}, allow=["localhost"])
    assert err.kind == "ssrf_blocked" and not err.retryable
    assert "127.0.0.1" in err.message and "loopback" in err.message
    assert [r.path.split("?")[0] for r in server.requests] == ["/redirect"]


# --- limits ------------------------------------------------------------------------------------


async def test_response_size_is_bounded_while_streaming(server: LocalServer) -> None:
    ok = await run({"url": server.url("/bytes/1000"), "max_response_bytes": 1000})
    assert len(ok["body"]) == 1000
    err = await fails({"url": server.url("/bytes/5000"), "max_response_bytes": 4096})
    assert err.kind == "response_too_large" and "declares 5000 bytes" in err.message
    err = await fails({"url": server.url("/bytes/300000?chunked=1"), "max_response_bytes": 100000})
    assert err.kind == "response_too_large" and "larger than max_response_bytes=100000" in (
        err.message
    )
    err = await fails(
        {"url": server.url("/bytes/3000?chunked=1"), "max_response_bytes": 100000},
        max_response_bytes=2048,  # the operator's ceiling wins over the agent's
    )
    assert err.kind == "response_too_large"


async def test_timeouts_are_retryable(server: LocalServer) -> None:
    err = await fails({"url": server.url("/slow"), "timeout_ms": 200})
    assert err.kind == "http_timeout" and err.retryable and "within 200 ms" in err.message
    err = await fails({"url": server.url("/slow"), "timeout_ms": 30_000}, timeout_seconds=0.2)
    assert err.kind == "http_timeout"


async def test_a_response_cut_short_is_retryable(server: LocalServer) -> None:
    err = await fails({"url": server.url("/broken")})
    assert err.kind == "http_error" and err.retryable
    assert err.message.startswith(f"GET {server.url('/broken')} failed: RemoteProtocolError")


async def test_connection_failures_are_retryable(server: LocalServer) -> None:
    with local_server() as gone:
        url = gone.url("/echo")
    err = await fails({"url": url})
    assert err.kind == "http_connect" and err.retryable and "could not connect" in err.message
    err = await fails({"url": server.url(f"/redirect?to={url}")})  # the message names the hop
    assert err.kind == "http_connect" and err.message.startswith(f"could not connect to {url}:")
    err = await fails({"url": "http://no-such-host.invalid/"}, ssrf_protection=True)
    assert err.kind == "http_connect" and "could not resolve no-such-host.invalid" in err.message


async def test_bad_requests_are_refused_before_sending() -> None:
    for config, words in [
        ({"url": "ftp://example.com/x"}, "http:// or https://"),
        ({"url": "/relative"}, "http:// or https://"),
        ({"url": "http://user:pw@example.com/"}, "must not carry credentials"),
        ({"url": "http://example.com/", "headers": {"X-A": "a\r\nX-Injected: 1"}}, "header"),
        ({"url": "http://example.com/", "method": "{{ 'TRACE' }}"}, "TRACE"),
        ({"url": "{{ input.n }}"}, "not text"),
        ({"url": "http://example.com/", "headers": {"host": "admin.internal"}}, "set by turbocat"),
        ({"url": "http://example.com/", "headers": {"Content-Length": "0"}}, "set by turbocat"),
    ]:
        err = await fails(config)
        assert err.kind == "invalid_request" and words in err.message, (config, err.message)


# --- SSRF --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/echo",
        "http://localhost:{port}/echo",  # a name resolving to loopback, checked after DNS
        "http://[::1]:{port}/echo",
        "http://[::ffff:127.0.0.1]:{port}/echo",
        "http://2130706433:{port}/echo",  # 127.0.0.1 as one decimal number
        "http://0x7f.1:{port}/echo",
        "http://127.1:{port}/echo",
        "http://0.0.0.0:{port}/echo",
        "http://10.0.0.1/",
        "http://192.168.0.1/",
        "http://172.16.5.4/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://100.64.0.1/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
)
async def test_ssrf_refuses_non_public_destinations(server: LocalServer, url: str) -> None:
    err = await fails({"url": url.format(port=server.port)}, allow=[])
    assert err.kind == "ssrf_blocked" and not err.retryable, err.message
    assert "refused to connect" in err.message
    assert server.requests == []  # refused before anything was sent


async def test_allow_list_and_switch_let_operators_reach_internal_services(
    server: LocalServer,
) -> None:
    assert (await run({"url": server.url("/text")}, allow=["127.0.0.0/8"]))["body"] == "hello"
    assert (await run({"url": server.url("/text", "localhost")}, allow=["localhost"]))["status"]
    assert (await run({"url": server.url("/text")}, allow=[], ssrf_protection=False))["status"]
    err = await fails({"url": server.url("/text")}, allow=[], ssrf_protection=False,
                      deny=["127.0.0.1"])  # fmt: skip
    assert err.kind == "ssrf_blocked" and "deny list" in err.message


async def test_the_checked_address_is_the_one_connected_to(server: LocalServer) -> None:
    """One resolution per connection: a DNS answer that changes after the check (rebinding)
    is never asked for."""
    answers = [[ipaddress.ip_address("127.0.0.1")], [ipaddress.ip_address("10.0.0.1")]]
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return list(answers[min(len(asked) - 1, 1)])

    settings = HttpRuntimeSettings(allow=["127.0.0.1/32"])
    async with netguard.make_client(settings, 5, resolver=rebinding) as client:
        r = await client.get(f"http://rebind.example:{server.port}/text")
        assert r.status_code == 200 and r.text == "hello" and asked == ["rebind.example"]
        assert server.requests[-1].headers["Host"] == f"rebind.example:{server.port}"
    async with netguard.make_client(settings, 5, resolver=rebinding) as client:
        with pytest.raises(netguard.AddressRefused, match=r"10\.0\.0\.1"):
            await client.get(f"http://rebind.example:{server.port}/text")


def _tls_for_localhost(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for the name ``localhost`` only (no IP address),
    and a client context trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(cafile=str(cert_file))
    return server_ctx, client_ctx


async def test_tls_verifies_the_name_while_connecting_to_the_checked_address(
    tmp_path: Path,
) -> None:
    server_ctx, client_ctx = _tls_for_localhost(tmp_path)
    settings = HttpRuntimeSettings(allow=["localhost"])
    with local_server(tls=server_ctx) as tls_server:
        async with netguard.make_client(settings, 5, ssl_context=client_ctx) as client:
            r = await client.get(tls_server.url("/text", "localhost"))
            assert r.status_code == 200 and r.text == "hello"
        # the certificate names localhost, not 127.0.0.1: verification really uses the name
        async with netguard.make_client(
            HttpRuntimeSettings(allow=LOOPBACK), 5, ssl_context=client_ctx
        ) as client:
            with pytest.raises(httpx.ConnectError, match="certificate"):
                await client.get(tls_server.url("/text"))
