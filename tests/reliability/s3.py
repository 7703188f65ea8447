"""A local S3 server (moto) behind a fault-injecting proxy, for R10 and R12.

The proxy forwards every request to moto and, for a chosen share of the requests whose
method it is told to fail, answers `503 SlowDown` instead (deterministic for a seed), counting
what it forwarded and what it injected.
"""

from __future__ import annotations

import http.client
import random
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FaultProxy", "LocalS3"]

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b'<Message>Please reduce your request rate.</Message></Error>')
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te",
               "upgrade", "content-length"}


class FaultProxy:
    """`rate` of the requests with a method in `methods` get 503 SlowDown; the rest reach
    `upstream` ("host:port"). `injected` and `forwarded` count by method."""

    def __init__(self, upstream: str, rate: float = 0.0, seed: int = 0,
                 methods: tuple[str, ...] = ("GET", "HEAD", "PUT")):
        self.upstream = upstream
        self.rate = rate
        self.methods = set(methods)
        self.injected: Counter[str] = Counter()
        self.forwarded: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()
                        if size == 0:
                            break
                        chunks.append(chunk)
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                body = self._body()
                if proxy._fail(self.command):
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(SLOW_DOWN)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                connection = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    connection.request(self.command, self.path, body=body or None,
                                       headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in _HOP_BY_HOP:
                            self.send_header(key, value)
                    if self.command == "HEAD":
                        length = response.getheader("Content-Length")
                        self.send_header("Content-Length", length or "0")
                    else:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    connection.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _fail(self, method: str) -> bool:
        with self._lock:
            if method in self.methods and self._random.random() < self.rate:
                self.injected[method] += 1
                return True
            self.forwarded[method] += 1
            return False

    def set(self, rate: float, seed: int = 0) -> None:
        """Fail `rate` of the requests from now on (counters and random stream restart)."""
        with self._lock:
            self.rate = rate
            self._random = random.Random(seed)
            self.injected.clear()
            self.forwarded.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class LocalS3:
    """moto's S3 server on a free port, a FaultProxy in front of it, and a boto3 client that
    talks to moto directly (setup and checks never draw injected faults)."""

    KEY = "testing-key-id"

    def __init__(self, secret: str = "testing-secret"):
        import boto3
        from moto.server import ThreadedMotoServer

        self.secret = secret
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.direct_url = f"http://{host}:{port}"
        self.proxy = FaultProxy(f"{host}:{port}")
        self.client = boto3.client("s3", endpoint_url=self.direct_url, region_name="us-east-1",
                                   aws_access_key_id=self.KEY,
                                   aws_secret_access_key=self.secret)

    def options(self, secret: str | None = None) -> dict:
        """s3fs storage options that go through the proxy."""
        return {"endpoint_url": self.proxy.url, "key": self.KEY,
                "secret": secret or self.secret,
                "client_kwargs": {"region_name": "us-east-1"}}

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                      Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def multipart_uploads(self, bucket: str) -> list[str]:
        return [u["Key"] for u in
                self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]

    def close(self) -> None:
        self.proxy.close()
        self._server.stop()
