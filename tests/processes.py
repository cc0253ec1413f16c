"""Real processes for the fault tests: a private Redis, Celery workers, beat, a publishing "web
process", and receivers that can be scripted to be slow or to appear late. The workers, beat and
the publisher can also run on RabbitMQ (`RabbitMQ`: a virtual host of the machine's server).

Every process is started in a session of its own and, where `setpriv` exists, with a parent-death
signal, so nothing outlives the test run even if pytest itself is killed. `Processes.close()` kills
whatever is still running (the `processes` fixture calls it, also when the test failed) and
prints the tail of every log, which pytest shows for failing tests only.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import amqp.exceptions
import kombu
import redis

from deliveries.celery import QUEUES
from tests.conftest import wait_until
from tests.receiver import Receiver, _Handler, _Server
from webhooks_project.celery import app as celery_app

BASE_DIR = Path(__file__).resolve().parent.parent
_SETPRIV = shutil.which("setpriv")

# The settings every child process runs with: short intervals so that recovery fits in a test.
FAST_SETTINGS = {
    "DJANGO_SETTINGS_MODULE": "tests.settings",
    "DJANGO_DEBUG": "1",
    "WEBHOOKS_ALLOW_PRIVATE_NETWORKS": "1",
    "WEBHOOKS_SWEEP_INTERVAL": "1",
    "WEBHOOKS_REQUEUE_AFTER": "3",
    "WEBHOOKS_CLAIM_MARGIN": "1",
    "WEBHOOKS_REQUEST_TIMEOUT": "3",
    "WEBHOOKS_CONNECT_TIMEOUT": "1",
    "WEBHOOKS_RETRY_SCHEDULE": "1,1,1",
    # Health checks and retention are not what these tests look at: keep them out of the way.
    "WEBHOOKS_HEALTH_INTERVAL": "3600",
    "PYTHONUNBUFFERED": "1",
}


def free_port() -> int:
    """A loopback port with nothing listening on it (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(settings_dict: dict[str, Any]) -> str:
    """The URL of the database `settings_dict` describes (pass the test database's)."""
    user = settings_dict.get("USER") or "postgres"
    password = settings_dict.get("PASSWORD") or ""
    credentials = f"{user}:{password}" if password else user
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{credentials}@{host}:{port}/{settings_dict['NAME']}"


class Child:
    """One child process with its output (stdout and stderr) in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> "Child":
        assert not self.alive, f"{self.name} is already running"
        argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *self.argv] if _SETPRIV else self.argv
        with self.log.open("ab") as output:
            output.write(f"--- start {time.strftime('%H:%M:%S')}: {' '.join(self.argv)}\n".encode())
            output.flush()
            self.process = subprocess.Popen(
                argv,
                cwd=BASE_DIR,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL, no goodbye: the process and anything it started in its session."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> None:
        """SIGTERM (Celery's warm shutdown: running tasks finish), SIGKILL after `timeout`."""
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


class RedisServer(Child):
    """A private redis-server on its own loopback port, without persistence: kill() and start()
    again give an empty broker on the same address."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        argv = [
            *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
        ]
        super().__init__(f"redis-{self.port}", argv, dict(os.environ), log_dir / f"redis-{self.port}.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=0, socket_timeout=2, socket_connect_timeout=2)

    def start(self, timeout: float = 10.0) -> "RedisServer":
        super().start()

        def answers() -> bool:
            assert self.alive, f"redis-server exited:\n{self.tail()}"
            try:
                return bool(self.client().ping())
            except redis.RedisError:
                return False

        wait_until(answers, timeout, f"redis-server answering on port {self.port}")
        return self

    def queue_lengths(self) -> dict[str, int]:
        client = self.client()
        return {queue: client.llen(queue) for queue in QUEUES}

    def consuming(self) -> bool:
        """Whether some worker is blocked reading the queues (BRPOP)."""
        try:
            return any(client.get("cmd") == "brpop" for client in self.client().client_list())
        except redis.RedisError:
            return False

    def messages(self) -> list[dict[str, Any]]:
        """Every task message in the broker, waiting in a queue or held unacknowledged (ETAs
        included), as {"task", "args", "eta", "where"}."""
        client = self.client()
        found: list[tuple[str, dict]] = []
        for queue in QUEUES:
            found += [(queue, json.loads(body)) for body in client.lrange(queue, 0, -1)]
        # kombu keeps each unacknowledged message as [message, exchange, routing key]
        found += [("unacked", json.loads(body)[0]) for body in client.hvals("unacked")]
        return [
            {
                "task": message["headers"].get("task"),
                "args": message["headers"].get("argsrepr"),
                "eta": message["headers"].get("eta"),
                "where": where,
            }
            for where, message in found
        ]


class RabbitMQUnavailable(Exception):
    """RabbitMQ does not answer, or the virtual host cannot be had; the message says which."""


class RabbitMQ:
    """A virtual host of the RabbitMQ server on 127.0.0.1:5672 (guest/guest), a broker of its own
    for one test run. Unlike Redis it is not started per test: `purge()` empties its webhook queues.
    Messages a consumer holds unacknowledged are not visible here; RabbitMQ requeues them when the
    consumer's connection closes."""

    def __init__(self, vhost: str, host: str = "127.0.0.1", port: int = 5672) -> None:
        self.vhost, self.host, self.port = vhost, host, port

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/{self.vhost}"

    def connection(self) -> kombu.Connection:
        return kombu.Connection(self.url, connect_timeout=2)

    def ensure_vhost(self) -> "RabbitMQ":
        """Check that the virtual host can be used, creating it with `rabbitmqctl` (root only)
        when it cannot; raise RabbitMQUnavailable saying why when that fails."""
        try:
            with socket.create_connection((self.host, self.port), timeout=2):
                pass
        except OSError as error:
            raise RabbitMQUnavailable(f"RabbitMQ does not answer on {self.host}:{self.port} ({error})") from None
        try:
            self.queue_stats()
            return self
        except (amqp.exceptions.NotAllowed, amqp.exceptions.AccessRefused):
            pass  # no such virtual host, or guest may not use it
        except (amqp.exceptions.AMQPError, OSError) as error:
            raise RabbitMQUnavailable(f"RabbitMQ on {self.host}:{self.port} does not work: {error!r}") from None
        commands = [
            ["rabbitmqctl", "add_vhost", self.vhost],
            ["rabbitmqctl", "set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*"],
        ]
        outputs = []
        for command in commands:
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
                outputs.append(f"$ {' '.join(command)} -> exit {done.returncode}: {done.stderr.strip()[-300:]}")
            except (OSError, subprocess.TimeoutExpired) as error:
                outputs.append(f"$ {' '.join(command)} -> {error}")
        try:
            self.queue_stats()
        except (amqp.exceptions.AMQPError, OSError) as error:
            tried = "\n".join(outputs)
            raise RabbitMQUnavailable(
                f"RabbitMQ answers, but virtual host {self.vhost!r} cannot be used by guest ({error}); "
                f"creating it (as root) gave:\n{tried}"
            ) from None
        return self

    def queue_stats(self) -> dict[str, tuple[int, int]]:
        """{queue: (messages ready, consumers)} for the webhook queues, declared as the Celery app
        declares them (exchange, binding) if they do not exist yet."""
        stats = {}
        with self.connection() as connection:
            channel = connection.default_channel
            for name in QUEUES:
                queue = celery_app.amqp.queues[name].bind(channel)
                queue.declare()
                _, messages, consumers = queue.queue_declare(passive=True)
                stats[name] = (messages, consumers)
        return stats

    def queue_lengths(self) -> dict[str, int]:
        """Messages waiting in each webhook queue (not those a worker holds unacknowledged)."""
        return {name: messages for name, (messages, _) in self.queue_stats().items()}

    def consuming(self) -> bool:
        """Whether some worker consumes one of the webhook queues."""
        try:
            return any(consumers for _, consumers in self.queue_stats().values())
        except (amqp.exceptions.AMQPError, OSError):
            return False

    def purge(self) -> int:
        """Empty the webhook queues; return how many messages were dropped. Messages held by a
        worker still connected come back when it disconnects: purge once it is gone."""
        dropped = 0
        with self.connection() as connection:
            channel = connection.default_channel
            for name in QUEUES:
                queue = celery_app.amqp.queues[name].bind(channel)
                queue.declare()
                dropped += queue.purge() or 0
        return dropped


Broker = RedisServer | RabbitMQ


@dataclass
class Published:
    """What the publishing process reported for one event."""

    id: str
    webhook_id: str
    seconds: float  # publish() plus the commit, including the fan-out enqueue attempt


PUBLISH_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import django
    django.setup()
    from django.db import transaction
    from deliveries import publish
    count, prefix = int(sys.argv[1]), sys.argv[2]
    for i in range(count):
        started = time.monotonic()
        with transaction.atomic():  # the host's own transaction; fan-out is enqueued on commit
            event = publish("order.paid", {"order": i}, idempotency_key=f"{prefix}-{i}")
        seconds = time.monotonic() - started
        print("PUBLISHED " + json.dumps([str(event.id), event.webhook_id, seconds]), flush=True)
    """
)


PUBLISH_EVENTS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import django
    django.setup()
    from django.db import transaction
    from deliveries import publish, publish_many
    events, each = json.loads(sys.argv[1]), sys.argv[2] == "True"
    if each:
        for item in events:
            with transaction.atomic():
                publish(item.pop("type"), item.pop("data"), **item)
    else:
        for start in range(0, len(events), 100):
            with transaction.atomic():
                publish_many(events[start : start + 100])
    """
)


@dataclass
class Processes:
    """The child processes of one test. Build it with the test database's URL; `close()` ends
    every process it started."""

    log_dir: Path
    database_url: str
    children: list[Child] = field(default_factory=list)
    _workers: int = 0

    def env(self, broker: Broker, **settings: str | float) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBHOOKS_", "CELERY_", "DJANGO_"))}
        env.update(FAST_SETTINGS)
        env.update(DATABASE_URL=self.database_url, CELERY_BROKER_URL=broker.url)
        env.update({name: str(value) for name, value in settings.items()})
        return env

    def _track(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def redis(self, port: int | None = None) -> RedisServer:
        server = RedisServer(self.log_dir, port)
        self._track(server)
        return server.start()

    def worker(
        self, broker: Broker, concurrency: int = 8, queues: Iterable[str] | None = QUEUES, **settings: str | float
    ) -> Child:
        """A Celery worker on the threads pool consuming `queues` (all of QUEUES by default; None
        starts it without -Q, as a host's plain `celery -A host worker` would), started (not yet
        consuming: see wait_until_consuming)."""
        self._workers += 1
        name = f"worker{self._workers}"
        argv = [
            *(sys.executable, "-m", "celery", "-A", "webhooks_project", "worker"),
            *("-P", "threads", "-c", str(concurrency)),
            *(("-Q", ",".join(queues)) if queues is not None else ()),
            *("--loglevel", "INFO", "-n", f"fault{self._workers}@%h"),
        ]
        child = Child(name, argv, self.env(broker, **settings), self.log_dir / f"{name}.log")
        return self._track(child).start()

    def beat(self, broker: Broker, **settings: str | float) -> Child:
        """The one beat: DatabaseScheduler, which registers the sweep (every
        WEBHOOKS_SWEEP_INTERVAL) in the database as it starts."""
        argv = [
            *(sys.executable, "-m", "celery", "-A", "webhooks_project", "beat"),
            *("--scheduler", "django_celery_beat.schedulers:DatabaseScheduler", "--loglevel", "INFO"),
            *("-s", str(self.log_dir / "beat-schedule"), "--pidfile", str(self.log_dir / "beat.pid")),
        ]
        child = Child("beat", argv, self.env(broker, **settings), self.log_dir / "beat.log")
        return self._track(child).start()

    def publish(
        self, broker: Broker, count: int, prefix: str, timeout: float = 30.0, **settings: str | float
    ) -> list[Published]:
        """Publish `count` events from a separate process (as a web process would), each in its
        own transaction, and return what it reported; fails if it does not finish in time."""
        child = Child(
            f"publish-{prefix}",
            [sys.executable, "-c", PUBLISH_SCRIPT, str(count), prefix],
            self.env(broker, **settings),
            self.log_dir / f"publish-{prefix}.log",
        )
        self._track(child).start()
        try:
            returncode = child.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            done = child.output().count("PUBLISHED ")
            raise AssertionError(f"publishing {count} events took over {timeout} s ({done} done)") from None
        assert returncode == 0, f"publishing failed (exit code {returncode}):\n{child.tail()}"
        published = [
            Published(*json.loads(line.split("PUBLISHED ", 1)[1]))
            for line in child.output().splitlines()
            if line.startswith("PUBLISHED ")
        ]
        assert len(published) == count, child.tail()
        return published

    def python(self, name: str, argv: list[str], broker_url: str) -> Child:
        """`python argv...` on the test database, with the test settings, started; its output in
        its log."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBHOOKS_", "CELERY_", "DJANGO_"))}
        env.update(FAST_SETTINGS, DATABASE_URL=self.database_url, CELERY_BROKER_URL=broker_url)
        child = Child(name, [sys.executable, *argv], env, self.log_dir / f"{name}.log")
        return self._track(child).start()

    def publish_events(self, broker: Broker, events: list[dict], each: bool = True, timeout: float = 60.0) -> None:
        """Publish `events` (dicts of publish_many's keys: type, data, tenant, ordering_key...)
        from a separate process, in order: each with publish() in its own transaction (`each`),
        or with publish_many() 100 to a transaction. Fails if it does not finish in time."""
        child = self.python("publish-events", ["-c", PUBLISH_EVENTS_SCRIPT, json.dumps(events), str(each)], broker.url)
        try:
            returncode = child.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            raise AssertionError(f"publishing {len(events)} events took over {timeout} s") from None
        assert returncode == 0, f"publishing failed (exit code {returncode}):\n{child.tail()}"

    def close(self) -> None:
        """Kill every process still running, newest first, and print every log's tail."""
        for child in reversed(self.children):
            child.kill()
        for child in self.children:
            print(f"\n===== {child.name} ({child.log}) =====\n{child.tail()}")


def wait_until_consuming(broker: Broker, timeout: float = 20.0) -> float:
    """Wait until some worker consumes the queues of `broker`; return how many seconds it took."""
    started = time.monotonic()
    wait_until(broker.consuming, timeout, "a worker consuming the queues", interval=0.1)
    return time.monotonic() - started


# --- Receivers ------------------------------------------------------------------------------


def receiver_on_port(port: int) -> Receiver:
    """A tests.receiver.Receiver on a given loopback port, started: the port opens now."""
    receiver = Receiver()
    receiver._server.server_close()  # the one bound to an ephemeral port
    server = _Server(("127.0.0.1", port), _Handler)  # allow_reuse_address is set by http.server
    server.receiver = receiver
    receiver._server = server
    receiver._thread = threading.Thread(target=server.serve_forever, daemon=True)
    return receiver.start()


class SlowAnswers:
    """A receiver answer (a callable taking the handler) that waits `seconds`, then answers 200,
    keeping track of which webhook ids are being answered right now (in flight) and which got
    their answer written."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self.in_flight: list[str] = []
        self.answered: list[str] = []

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        webhook_id = handler.headers["webhook-id"]
        with self._lock:
            self.in_flight.append(webhook_id)
        try:
            time.sleep(self.seconds)
            handler.send_response(200)
            handler.send_header("Content-Length", "2")
            handler.end_headers()
            handler.wfile.write(b"ok")
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True  # the sender is gone
        else:
            with self._lock:
                self.answered.append(webhook_id)
        finally:
            with self._lock:
                self.in_flight.remove(webhook_id)

    def snapshot(self) -> tuple[list[str], list[str]]:
        """(in flight, answered) at this moment."""
        with self._lock:
            return list(self.in_flight), list(self.answered)


def duplicates(webhook_ids: Iterable[str]) -> dict[str, int]:
    """Webhook ids received more than once, with how many times."""
    counts: dict[str, int] = {}
    for webhook_id in webhook_ids:
        counts[webhook_id] = counts.get(webhook_id, 0) + 1
    return {webhook_id: n for webhook_id, n in counts.items() if n > 1}
