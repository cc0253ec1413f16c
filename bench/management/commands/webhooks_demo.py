"""`manage.py webhooks_demo` (`make demo`): the real pipeline on the embedded defaults.

Migrates the SQLite database, starts a Celery worker and beat as subprocesses (filesystem
broker, no servers), starts a sample receiver that verifies every request with the
`standardwebhooks` package, publishes events, shows the deliveries (retries included) until
they are final, prints a summary and then serves the admin until Ctrl-C. `--no-serve` stops
after the summary: exit code 0 only if every delivery succeeded and every request verified.
"""

import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Count

from bench.demo_processes import Processes, shown
from bench.demo_receiver import DemoReceiver
from deliveries import publish
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus
from endpoints import secret_box
from endpoints.models import Endpoint

DEMO_RETRY_SCHEDULE = "1,2,4"
EVENT_TYPES = ("order.created", "order.paid", "invoice.paid")
DEMO_DESCRIPTION = "demo receiver"
CELERY = [sys.executable, "-m", "celery", "-A", "webhooks_project"]
# The development-key warning: the demo says it in its own output (the "secrets" line), where it
# reads as a fact about the demo, not above the banner as if something were wrong.
DEVELOPMENT_KEY_CHECK = "webhooks.W010"


def _payload(number: int, event_type: str) -> dict:
    order = {"id": 1000 + number, "total": f"{10 + number}.90", "currency": "EUR"}
    if event_type == "invoice.paid":
        return {"invoice": {"id": f"INV-{number:04d}", "order_id": order["id"], "amount": order["total"]}}
    return {"order": order}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _require_free_port(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise CommandError(f"Port {port} is not free for the admin server ({exc}); pass --port.") from None


class Command(BaseCommand):
    help = "Run the webhook pipeline end to end on SQLite and the filesystem broker, then serve the admin."

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=20, help="How many events to publish (default 20).")
        parser.add_argument(
            "--timeout", type=float, default=60.0, help="Seconds to wait for every delivery to finish (default 60)."
        )
        parser.add_argument("--no-serve", action="store_true", help="Exit after the summary instead of serving.")
        parser.add_argument("--port", type=int, default=8000, help="Port of the admin server (default 8000).")

    def check(self, *args, **kwargs):
        """The system checks, less DEVELOPMENT_KEY_CHECK."""
        silenced = settings.SILENCED_SYSTEM_CHECKS
        settings.SILENCED_SYSTEM_CHECKS = [*silenced, DEVELOPMENT_KEY_CHECK]
        try:
            super().check(*args, **kwargs)
        finally:
            settings.SILENCED_SYSTEM_CHECKS = silenced

    def handle(self, *args, events, timeout, no_serve, port, **options):
        self._require_embedded_defaults()
        if events < 1:
            raise CommandError("--events must be at least 1.")
        if not no_serve:
            _require_free_port(port)
        schedule = os.environ.get("WEBHOOKS_RETRY_SCHEDULE") or DEMO_RETRY_SCHEDULE
        os.environ["WEBHOOKS_RETRY_SCHEDULE"] = settings.WEBHOOKS_RETRY_SCHEDULE = schedule
        os.environ["WEBHOOKS_VAR_DIR"] = str(settings.VAR_DIR)

        # Closing the terminal or `kill` must stop the worker and beat too (finally below).
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGHUP, _interrupt)
        self.log_dir = Path(settings.VAR_DIR) / "demo"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        processes = Processes(self.log_dir, {**os.environ, "PYTHONUNBUFFERED": "1"})
        receiver = DemoReceiver()
        try:
            self._run(processes, receiver, schedule, events, timeout, no_serve, port)
        except KeyboardInterrupt:
            self.stdout.write("\nInterrupted.")
            if no_serve:
                raise SystemExit(130) from None
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan children
            self.stdout.write("Stopping the worker, beat and receiver ...")
            processes.stop_all()
            receiver.stop()
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _require_embedded_defaults(self) -> None:
        # It resets the `admin` password and adds endpoints: never against a real deployment.
        if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3" or not (
            settings.CELERY_BROKER_URL.startswith("filesystem://")
        ):
            raise CommandError(
                "The demo runs on the embedded defaults only (a SQLite file and the filesystem broker "
                "under var/). Unset DATABASE_URL and CELERY_BROKER_URL and run it again."
            )
        if not settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS:
            raise CommandError(
                "The demo receiver listens on 127.0.0.1, which the SSRF guard refuses: set "
                "WEBHOOKS_ALLOW_PRIVATE_NETWORKS=1 (the default while DJANGO_DEBUG is on)."
            )

    def _run(self, processes, receiver, schedule, events, timeout, no_serve, port) -> None:
        out = self.stdout
        out.write(self.style.MIGRATE_HEADING("Webhooks demo: the real pipeline on SQLite and a filesystem broker"))
        call_command("migrate", interactive=False, verbosity=0)
        out.write(f"  database    {shown(Path(settings.DATABASES['default']['NAME']))} (migrated)")
        if not secret_box.configured_keys():
            out.write(
                "  secrets     development key (WEBHOOKS_SECRET_KEYS unset): fine for the demo, not for real ones"
            )
        password = self._reset_admin()
        # One worker, no -Q: it consumes every lane (deliveries.celery.configure declares them).
        worker_log = processes.start("worker", [*CELERY, "worker", "-P", "threads", "-c", "8", "--loglevel", "WARNING"])
        scheduler = "django_celery_beat.schedulers:DatabaseScheduler"
        beat_files = ["--pidfile", str(self.log_dir / "beat.pid"), "-s", str(self.log_dir / "celerybeat-schedule")]
        beat_log = processes.start(
            "beat", [*CELERY, "beat", "--scheduler", scheduler, "--loglevel", "WARNING", *beat_files]
        )
        out.write(f"  worker      started (8 threads), log in {shown(worker_log)}")
        out.write(
            f"  beat        started (sweep every {settings.WEBHOOKS_SWEEP_INTERVAL:g} s), log in {shown(beat_log)}"
        )
        receiver.start()
        out.write(
            f"  receiver    {receiver.url('/')} verifies every request with standardwebhooks and answers "
            f"500 to the first request of every {receiver.fail_every}th delivery"
        )
        endpoints = self._create_endpoints(receiver)
        out.write(
            f"  retries     after {', '.join(s.strip() + ' s' for s in schedule.split(','))} (WEBHOOKS_RETRY_SCHEDULE)"
        )

        run, published = secrets.token_hex(4), []
        with transaction.atomic():
            for n in range(1, events + 1):
                event_type = EVENT_TYPES[(n - 1) % len(EVENT_TYPES)]
                published.append(publish(event_type, _payload(n, event_type), idempotency_key=f"demo-{run}-{n}"))
        expected = sum(ep.receives(event.type) for event in published for ep in endpoints)
        out.write(f"\nPublished {events} events ({', '.join(EVENT_TYPES)}) in one transaction: {expected} deliveries.")
        elapsed = self._follow(processes, endpoints, expected, timeout)
        ok = self._summary(receiver, endpoints, events, expected, elapsed)
        if no_serve:
            if not ok:
                raise CommandError("not every delivery succeeded and verified; see above", returncode=1)
            return
        self._serve(processes, port, password)

    def _reset_admin(self) -> str:
        password = secrets.token_urlsafe(12)
        user = get_user_model().objects.filter(username="admin").first() or get_user_model()(username="admin")
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        self.stdout.write("  admin user  admin (new random password, shown at the end)")
        return password

    def _create_endpoints(self, receiver: DemoReceiver) -> list[Endpoint]:
        # Receivers of earlier runs are gone: stop sending to them.
        for old in Endpoint.objects.filter(description__startswith=DEMO_DESCRIPTION, is_active=True):
            old.disable("receiver of an earlier webhooks_demo run")
        endpoints = []
        for path, patterns, what in (
            ("/hooks/all", [], "every event type"),
            ("/hooks/orders", ["order.*"], "order.* only"),
        ):
            endpoint = Endpoint.objects.create(
                url=receiver.url(path), description=f"{DEMO_DESCRIPTION} ({what})", event_types=patterns
            )
            receiver.add_endpoint(path, endpoint.secret)
            endpoints.append(endpoint)
            self.stdout.write(f"  endpoint    #{endpoint.pk} {endpoint.url} ({what})")
        return endpoints

    def _follow(self, processes: Processes, endpoints: list[Endpoint], expected: int, timeout: float) -> float:
        """Show delivery progress until every delivery is final or `timeout`; return the seconds spent."""
        started = time.monotonic()
        tty = self.stdout.isatty()
        last = None
        while True:
            counts = dict(
                Delivery.objects.filter(endpoint__in=endpoints)
                .values("status")
                .annotate(n=Count("id"))
                .values_list("status", "n")
            )
            done, failed = counts.get(DeliveryStatus.SUCCEEDED, 0), counts.get(DeliveryStatus.FAILED, 0)
            pending = expected - done - failed
            elapsed = time.monotonic() - started
            line = f"Delivering: {done} succeeded, {pending} pending, {failed} failed of {expected}"
            if tty:
                self.stdout.write(f"\r{line}   [{elapsed:4.1f} s]", ending="")
                self.stdout.flush()
            elif line != last:
                self.stdout.write(f"{line}   [{elapsed:4.1f} s]")
            last = line
            if pending <= 0:
                break
            if elapsed > timeout:
                self.stdout.write(self.style.WARNING(f"\nTimed out after {timeout:g} s with {pending} pending."))
                break
            processes.check_alive()
            time.sleep(0.2)
        if tty:
            self.stdout.write("")
        return elapsed

    def _summary(self, receiver, endpoints, events, expected, elapsed) -> bool:
        deliveries = Delivery.objects.filter(endpoint__in=endpoints)
        succeeded = deliveries.filter(status=DeliveryStatus.SUCCEEDED).count()
        failed = deliveries.filter(status=DeliveryStatus.FAILED).count()
        retried = deliveries.filter(attempt_count__gt=1).count()
        attempts = DeliveryAttempt.objects.filter(delivery__endpoint__in=endpoints).count()
        stats = receiver.stats()
        per_endpoint = dict(deliveries.values("endpoint").annotate(n=Count("id")).values_list("endpoint", "n"))
        split = ", ".join(f"{per_endpoint.get(ep.pk, 0)} to endpoint #{ep.pk}" for ep in endpoints)
        rows = [
            ("events published", events),
            ("deliveries", f"{expected} ({split})"),
            ("succeeded / failed", f"{succeeded} / {failed}"),
            ("attempts made", f"{attempts} ({retried} deliveries needed a retry)"),
            ("receiver verified", f"{stats.verified} requests with standardwebhooks"),
            ("failed verification", stats.verification_failed),
            ("duplicates seen", f"{stats.duplicates} (the receiver dedupes on webhook-id)"),
            ("delivery phase", f"{elapsed:.1f} s"),
        ]
        self.stdout.write("\n" + self.style.MIGRATE_HEADING("Summary"))
        for label, value in rows:
            self.stdout.write(f"  {label:<22}{value}")
        ok = succeeded == expected and stats.verification_failed == 0 and stats.verified >= attempts
        if ok:
            self.stdout.write(self.style.SUCCESS("Result: OK, every delivery succeeded and every request verified."))
        else:
            self.stdout.write(self.style.ERROR(f"Result: FAILED, see the counts above and {shown(self.log_dir)}/."))
        return ok

    def _serve(self, processes: Processes, port: int, password: str) -> None:
        argv = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "runserver", f"127.0.0.1:{port}"]
        log = processes.start("runserver", [*argv, "--noreload"])
        deadline = time.monotonic() + 15
        while True:
            processes.check_alive()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise CommandError(f"the admin server did not start; see {shown(log)}") from None
                time.sleep(0.2)
        self.stdout.write("\n" + self.style.MIGRATE_HEADING("The admin is up"))
        self.stdout.write(f"  URL         http://127.0.0.1:{port}/admin/")
        self.stdout.write("  username    admin")
        self.stdout.write(f"  password    {password}")
        self.stdout.write(f"  logs        {shown(self.log_dir)}/ (worker.log, beat.log, runserver.log)")
        self.stdout.write("The worker, beat and receiver keep running. Press Ctrl-C to stop.")
        while True:
            processes.check_alive()
            time.sleep(1)
