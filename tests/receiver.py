"""A real HTTP receiver on 127.0.0.1 for tests: records every request, answers as scripted.

`Receiver.script(path, [(500, {}, b""), (200, {}, b"ok")])` makes successive requests to
`path` get those answers (the last one repeats). An answer may also be a callable taking the
request handler, for stalls, trickled bodies and redirects.

OPTIONS requests (the verification handshake) are recorded too, with `method="OPTIONS"`, and
answered from their own script (`script_options`); unscripted, they get 405 without the
grant header, as from a receiver that knows nothing of the handshake. `received()` and
`wait_for()` count POSTs unless asked for another method.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.time()
    method: str = "POST"


Answer = tuple[int, dict[str, str], bytes] | Callable[[BaseHTTPRequestHandler], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def do_POST(self) -> None:
        self._answer("POST")

    def do_OPTIONS(self) -> None:
        self._answer("OPTIONS")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        receiver = self.server.receiver
        request = ReceivedRequest(self.path, dict(self.headers.items()), body, time.time(), method)
        answer = receiver._record(request)
        if callable(answer):
            self.received = request  # what this request was, for the callable
            answer(self)
            return
        status, headers, content = answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: "Receiver"


class Receiver:
    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.requests: list[ReceivedRequest] = []
        self._scripts: dict[str, list[Answer]] = {}
        self._options_scripts: dict[str, list[Answer]] = {}
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> "Receiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, path: str, answers: list[Answer]) -> None:
        with self._lock:
            self._scripts[path] = list(answers)

    def script_options(self, path: str, answers: list[Answer]) -> None:
        """Answers to successive OPTIONS requests to `path` (the last one repeats)."""
        with self._lock:
            self._options_scripts[path] = list(answers)

    def _record(self, request: ReceivedRequest) -> Answer:
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()
            if request.method == "OPTIONS":
                answers = self._options_scripts.get(request.path)
                default: Answer = (405, {"Allow": "POST"}, b"")
            else:
                answers = self._scripts.get(request.path)
                default = (200, {}, b"ok")
            if not answers:
                return default
            return answers.pop(0) if len(answers) > 1 else answers[0]

    def _matching(self, path: str | None, method: str | None) -> list[ReceivedRequest]:
        return [r for r in self.requests if (path is None or r.path == path) and (method is None or r.method == method)]

    def received(self, path: str | None = None, method: str | None = "POST") -> list[ReceivedRequest]:
        """The requests (to `path`) so far; POSTs only unless `method` says otherwise (None: all)."""
        with self._lock:
            return self._matching(path, method)

    def wait_for(
        self, count: int, path: str | None = None, timeout: float = 15.0, method: str | None = "POST"
    ) -> list[ReceivedRequest]:
        """Wait until at least `count` requests (to `path`) arrived; fail the test if they do not."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = self._matching(path, method)
                if len(got) >= count:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} {method or ''} requests to {path or 'any path'}, got {len(got)}"
                    )
                self._cond.wait(remaining)
