"""This test process's Django project served over real HTTP on 127.0.0.1, in a thread: what a
receiving project looks like to our sender (tests of the receiver toolkit)."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.core.handlers.wsgi import WSGIHandler


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:
        pass


@contextmanager
def serving_django() -> Iterator[str]:
    """Serve the current ROOT_URLCONF until the block ends; yields the base URL."""
    server = make_server("127.0.0.1", 0, WSGIHandler(), server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
