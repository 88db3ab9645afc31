"""A real HTTP server on 127.0.0.1 for tests of outbound HTTP (the ``api`` kind).

It runs in a thread (``http.server``), records every request it gets and answers by path:

- ``/echo``: 200 JSON ``{method, path, query, headers, body}`` of the request;
- ``/text``: 200 ``text/plain`` body ``hello``;
- ``/status/<code>``: that status with a JSON body; ``?retry_after=`` adds a Retry-After;
- ``/redirect?to=<url>&code=<3xx>``: a redirect to ``to``;
- ``/chain/<n>``: redirects to ``/chain/<n-1>`` until ``/chain/0``, which echoes;
- ``/bytes/<n>``: ``n`` bytes; ``?chunked=1`` sends them without a Content-Length;
- ``/broken``: a body cut short (the connection closes after 5 of 100 bytes);
- ``/slow``: answers only once ``release`` is set (or after 10 s).
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class LocalServer:
    port: int
    scheme: str = "http"
    requests: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


def _handler(state: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(
            self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(doc).encode(), "application/json", headers)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            state.requests.append(Seen(self.command, self.path, dict(self.headers), body))
            segments = parts.path.strip("/").split("/")
            match segments:
                case ["echo"] | ["chain", "0"]:
                    self._json(200, {
                        "method": self.command, "path": parts.path,
                        "query": parse_qs(parts.query), "headers": dict(self.headers),
                        "body": body.decode(errors="replace"),
                    })  # fmt: skip
                case ["text"]:
                    self._send(200, b"hello", "text/plain; charset=utf-8")
                case ["status", code]:
                    extra = {}
                    if "retry_after" in query:
                        extra["Retry-After"] = query["retry_after"]
                    self._json(int(code), {"error": f"status {code}", "echo": body.decode()}, extra)
                case ["redirect"]:
                    self._send(int(query.get("code", "302")), b"", "text/plain",
                               {"Location": query["to"]})  # fmt: skip
                case ["chain", n]:
                    self._send(302, b"", "text/plain", {"Location": f"/chain/{int(n) - 1}"})
                case ["bytes", n]:
                    data = b"x" * int(n)
                    if query.get("chunked"):
                        self.send_response(200)
                        self.send_header("Content-Type", "application/octet-stream")
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        for i in range(0, len(data), 65536):
                            piece = data[i : i + 65536]
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.write(b"0\r\n\r\n")
                    else:
                        self._send(200, data, "application/octet-stream")
                case ["broken"]:  # promises 100 bytes, sends 5 and hangs up
                    self.send_response(200)
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    self.wfile.write(b"short")
                    self.close_connection = True
                case ["slow"]:
                    state.release.wait(10)
                    self._send(200, b"late", "text/plain")
                case _:
                    self._json(404, {"error": "no such path"})

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 resets a burst of concurrent clients


@contextmanager
def local_server(tls: ssl.SSLContext | None = None) -> Iterator[LocalServer]:
    httpd = _Server(("127.0.0.1", 0), _handler(LocalServer(0)))
    state = LocalServer(httpd.server_address[1], "https" if tls else "http")
    httpd.RequestHandlerClass = _handler(state)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
