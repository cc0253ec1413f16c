"""The sample receiver of `manage.py webhooks_demo`: what a well-behaved webhook consumer does.

It verifies every request with the `standardwebhooks` package against the endpoint's secret
(400 when that fails), dedupes on `webhook-id` (a repeat of an accepted id is answered 200 and
counted, never processed twice), and answers 500 to the first request of every `fail_every`-th
new (endpoint, webhook-id) pair, so the sender's retries show up in the demo.
"""

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class ReceiverStats:
    requests: int = 0
    verified: int = 0
    verification_failed: int = 0
    refused_to_show_retries: int = 0
    accepted: int = 0
    duplicates: int = 0
    accepted_by_path: dict[str, int] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, text = self.server.receiver.handle(self.path, dict(self.headers.items()), body)
        content = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format, *args) -> None:
        pass  # the demo prints a summary instead


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: "DemoReceiver"


class DemoReceiver:
    """An HTTP server on 127.0.0.1 (ephemeral port) in a background thread.

    Register each path with the secret of the endpoint that posts to it (`add_endpoint`)
    before anything is published; `stats()` returns a consistent snapshot of the counters.
    """

    def __init__(self, fail_every: int = 4) -> None:
        self.fail_every = fail_every
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-receiver", daemon=True)
        self._lock = threading.Lock()
        self._verifiers: dict[str, Webhook] = {}
        self._accepted_ids: set[tuple[str, str]] = set()
        self._seen_ids: set[tuple[str, str]] = set()
        self._stats = ReceiverStats()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def add_endpoint(self, path: str, secret: str) -> None:
        with self._lock:
            self._verifiers[path] = Webhook(secret)
            self._stats.accepted_by_path[path] = 0

    def start(self) -> "DemoReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() would wait forever for a loop never started
            self._server.shutdown()
        self._server.server_close()

    def stats(self) -> ReceiverStats:
        with self._lock:
            return ReceiverStats(**{**vars(self._stats), "accepted_by_path": dict(self._stats.accepted_by_path)})

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """Verify, dedupe and answer one request; returns (status, response text)."""
        headers = {name.lower(): value for name, value in headers.items()}
        with self._lock:
            self._stats.requests += 1
            verifier = self._verifiers.get(path)
        if verifier is None:
            return 404, "no such endpoint"
        try:
            verifier.verify(body, headers)
        except WebhookVerificationError as exc:
            with self._lock:
                self._stats.verification_failed += 1
            return 400, f"signature verification failed: {exc}"

        key = (path, headers["webhook-id"])
        with self._lock:
            stats = self._stats
            stats.verified += 1
            if key in self._accepted_ids:
                stats.duplicates += 1
                return 200, "duplicate, already processed"
            if key not in self._seen_ids:
                self._seen_ids.add(key)
                if self.fail_every and len(self._seen_ids) % self.fail_every == 0:
                    stats.refused_to_show_retries += 1
                    return 500, "simulated outage: try again later"
            self._accepted_ids.add(key)
            stats.accepted += 1
            stats.accepted_by_path[path] += 1
        return 200, "ok"
