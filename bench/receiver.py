"""The benchmark's receiver: a small asyncio HTTP/1.1 server in a process of its own.

It answers every POST at once with 200, records when each request arrived (`time.time()`,
after the body was read) with its `webhook-id` and path, and keeps connections alive. The path
says how to answer:

- `/ok/<label>`: 200 at once;
- `/delay/<ms>/<label>`: 200 after `ms` milliseconds (the "slow receiver");
- `/timeout/<label>`: never answers; the connection is held until the sender gives up and
  closes it (or HOLD_SECONDS pass), so the sender sees its own request timeout.

Control paths, for the benchmark only: `GET /_count` (requests recorded), `GET /_records?since=N`
(records from index N as JSON `[[arrival, webhook_id, path], ...]`), `POST /_reset`.

Run as `python -m bench.receiver`; it prints `PORT <n>` once listening. `ReceiverProcess`
starts it and talks to it.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HOLD_SECONDS = 600.0  # a held "timeout" request is dropped after this, whatever the sender does
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class Recorder:
    """Every request that reached a hook path, in arrival order."""

    def __init__(self) -> None:
        self.records: list[tuple[float, str, str]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ", 2)[:2]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                if length:
                    await reader.readexactly(length)
                arrival = time.time()
                path, _, query = target.partition("?")
                if path.startswith("/_"):
                    writer.write(self.control(method, path, query))
                elif await self.answer(path, headers.get("webhook-id", ""), arrival, reader):
                    writer.write(OK)
                else:
                    break
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def answer(self, path: str, webhook_id: str, arrival: float, reader: asyncio.StreamReader) -> bool:
        """Record the request and wait as its path says; False: close without an answer."""
        self.records.append((arrival, webhook_id, path))
        parts = path.split("/")
        if len(parts) > 2 and parts[1] == "delay":
            await asyncio.sleep(int(parts[2]) / 1000)
        elif len(parts) > 1 and parts[1] == "timeout":
            try:  # returns when the sender closes the connection (its timeout)
                await asyncio.wait_for(reader.read(1), HOLD_SECONDS)
            except TimeoutError:
                pass
            return False
        return True

    def control(self, method: str, path: str, query: str) -> bytes:
        if path == "/_count":
            body = json.dumps({"count": len(self.records)})
        elif path == "/_records":
            since = int(query.removeprefix("since=") or 0) if query.startswith("since=") else 0
            body = json.dumps(self.records[since:])
        elif path == "/_reset" and method == "POST":
            self.records = []
            body = "{}"
        else:
            return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        data = body.encode()
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)


async def serve(port: int) -> None:
    recorder = Recorder()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", port, backlog=2048, reuse_address=True)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args().port))


class ReceiverProcess:
    """The receiver in a child process (killed with its parent where `setpriv` exists)."""

    def __init__(self, log: Path, launcher: list[str]) -> None:
        self.log = log
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [*launcher, sys.executable, "-m", "bench.receiver"],
                cwd=Path(__file__).resolve().parent.parent,
                stdout=subprocess.PIPE,
                stderr=output,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        line = self.process.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the receiver did not start; see {log}")
        self.port = int(line.split()[1])

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _call(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(self.url(path), method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def count(self) -> int:
        return self._call("/_count")["count"]

    def records(self, since: int = 0) -> list[tuple[float, str, str]]:
        return [tuple(record) for record in self._call(f"/_records?since={since}")]

    def reset(self) -> None:
        self._call("/_reset", "POST")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)
        self.process.stdout.close()


if __name__ == "__main__":
    main()
