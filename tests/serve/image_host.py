"""A small http.server on 127.0.0.1 serving test images, redirects, slow and huge bodies."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ImageHost:
    def __init__(self, image: bytes, huge_bytes: int, slow_s: float):
        self.image, self.huge_bytes, self.slow_s = image, huge_bytes, slow_s
        self.hits: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                host.hits.append(self.path)
                host.answer(self)

            def log_message(self, *args: object) -> None:
                return None  # keep test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        if path == "/image.jpg":
            self._send(handler, 200, self.image, "image/jpeg")
        elif path == "/page.html":
            self._send(handler, 200, b"<!doctype html><html>hello</html>", "text/html")
        elif path == "/huge.jpg":
            self._send(handler, 200, b"\xff" * self.huge_bytes, "image/jpeg")
        elif path.startswith("/redirect?to="):
            handler.send_response(302)
            handler.send_header("Location", path.split("=", 1)[1])
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        elif path == "/slow.jpg":
            time.sleep(self.slow_s)
            self._send(handler, 200, self.image, "image/jpeg")
        else:
            self._send(handler, 404, b"not here", "text/plain")

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, kind: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        try:
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client gave up on purpose (size limit): nothing left to do


@contextlib.contextmanager
def image_host(image: bytes, huge_bytes: int = 0, slow_s: float = 3.0) -> Iterator[ImageHost]:
    host = ImageHost(image, huge_bytes, slow_s)
    thread = threading.Thread(target=host.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        host.server.shutdown()
        host.server.server_close()
