"""An HTTP proxy in front of the loopback S3 server that fails a share of requests.

Every `every`-th request is answered the way an overloaded S3 answers (503 SlowDown or
500 InternalError, with S3's XML error body) without reaching the server; the others are
forwarded unchanged. The drill points AWS_ENDPOINT_URL at it.
"""

from __future__ import annotations

import http.client
import itertools
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ERRORS = [
    (503, "SlowDown", "Please reduce your request rate."),
    (500, "InternalError", "We encountered an internal error. Please try again."),
]


class FlakyS3Proxy:
    def __init__(self, upstream: str, every: int = 4):
        target = urlsplit(upstream)
        self.host, self.port = target.hostname, target.port
        self.every = every
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        self.failed: list[str] = []
        self.forwarded = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _should_fail(self, request: str) -> tuple[int, str, str] | None:
        with self.lock:
            n = next(self.counter)
            if n % self.every:
                self.forwarded += 1
                return None
            self.failed.append(request)
            return ERRORS[(n // self.every) % len(ERRORS)]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                return

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _relay(self) -> None:
                body = self._body()
                error = proxy._should_fail(f"{self.command} {self.path}")
                if error is not None:
                    status, code, message = error
                    xml = (
                        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
                        f"{code}</Code><Message>{message}</Message><RequestId>drill"
                        "</RequestId></Error>"
                    ).encode()
                    if self.command == "HEAD":  # HEAD answers carry no body
                        xml = b""
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    self.wfile.write(xml)
                    return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"
                }
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(proxy.host, proxy.port, timeout=60)
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                payload = answer.read()
                self.send_response(answer.status)
                # a HEAD answer's Content-Length is the object's size, not this (empty) body's
                length = answer.getheader("Content-Length") if self.command == "HEAD" else None
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", length or str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler
