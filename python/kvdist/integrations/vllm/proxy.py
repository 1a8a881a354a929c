"""A small router for disaggregated serving with KvdistConnector.

It takes OpenAI-style ``POST /v1/completions`` and sends each request to
one prefill and one decode vLLM server at once, with the same
``transfer_id``: the decoder allocates blocks and asks the prefiller for
them; the prefiller (``max_tokens`` 1) pushes the cache layer by layer
while it computes; the client gets the decoder's answer, streamed if it
asked for a stream. Standard library only.

    python -m kvdist.integrations.vllm.proxy --port 8000 \\
        --prefill http://127.0.0.1:8100 --decode http://127.0.0.1:8200 \\
        --prefill-kvdist 127.0.0.1:26000 --prefill-cluster 1
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import urllib.parse
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

__all__ = ["Route", "main", "make_server"]

TIMEOUT_S = 600


@dataclass(frozen=True)
class Route:
    prefill: str  # http://host:port of the prefill vLLM server
    decode: str  # http://host:port of the decode vLLM server
    kvdist_host: str  # the prefiller's kvdist listener
    kvdist_port: int
    prefill_cluster: int


def _connect(base: str) -> http.client.HTTPConnection:
    u = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=TIMEOUT_S)


def _post(base: str, path: str, body: dict[str, Any]) -> http.client.HTTPResponse:
    conn = _connect(base)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    return conn.getresponse()


def split(route: Route, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The prefill and decode requests for one client request."""
    tid = uuid.uuid4().hex
    prefill = dict(body, max_tokens=1, stream=False)
    prefill.pop("stream_options", None)
    prefill["kv_transfer_params"] = {"do_remote_decode": True, "transfer_id": tid}
    decode = dict(body)
    decode["kv_transfer_params"] = {
        "do_remote_prefill": True,
        "transfer_id": tid,
        "remote_host": route.kvdist_host,
        "remote_port": route.kvdist_port,
        "remote_cluster_id": route.prefill_cluster,
    }
    return prefill, decode


class _Handler(BaseHTTPRequestHandler):
    route: Route
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet
        return

    def _reply(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(200, b"{}")
        else:
            self._reply(404, b'{"error": "not found"}')

    def do_POST(self) -> None:
        if self.path != "/v1/completions":
            self._reply(404, b'{"error": "only /v1/completions"}')
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as e:
            self._reply(400, json.dumps({"error": f"bad request: {e}"}).encode())
            return
        prefill, decode = split(self.route, body)
        # Both at once: the prefiller holds the request until the decoder's
        # block ids arrive, so neither may wait for the other's answer.
        failure: list[str] = []

        def run_prefill() -> None:
            try:
                r = _post(self.route.prefill, "/v1/completions", prefill)
                data = r.read()
                if r.status != 200:
                    failure.append(f"prefill server answered {r.status}: {data[:200]!r}")
            except OSError as e:
                failure.append(f"prefill server: {e}")

        t = threading.Thread(target=run_prefill, daemon=True)
        t.start()
        try:
            r = _post(self.route.decode, "/v1/completions", decode)
        except OSError as e:
            t.join(TIMEOUT_S)
            self._reply(502, json.dumps({"error": f"decode server: {e}"}).encode())
            return
        if not body.get("stream") or r.status != 200:
            data = r.read()
            t.join(TIMEOUT_S)
            self._reply(r.status, data, r.getheader("Content-Type", "application/json"))
            return
        self.send_response(200)
        self.send_header("Content-Type", r.getheader("Content-Type", "text/event-stream"))
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while True:
            chunk = r.read1(65536)
            if not chunk:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        t.join(TIMEOUT_S)


def make_server(route: Route, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"route": route})
    return ThreadingHTTPServer((host, port), handler)


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--prefill", required=True, help="http://host:port of the prefill server")
    p.add_argument("--decode", required=True, help="http://host:port of the decode server")
    p.add_argument(
        "--prefill-kvdist", required=True, help="the prefiller's kvdist listen host:port"
    )
    p.add_argument("--prefill-cluster", type=int, default=1, help="the prefiller's cluster_id")
    a = p.parse_args(argv)
    host, _, port = a.prefill_kvdist.rpartition(":")
    route = Route(a.prefill, a.decode, host, int(port), a.prefill_cluster)
    server = make_server(route, a.host, a.port)
    print(f"kvdist proxy on http://{a.host}:{a.port}: prefill {a.prefill}, decode {a.decode}")
    server.serve_forever()


if __name__ == "__main__":
    main()
