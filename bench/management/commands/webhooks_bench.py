"""`manage.py webhooks_bench`: the delivery pipeline measured end to end (issue 7).

Real PostgreSQL (a database of its own, `webhooks_bench`), a real broker (Redis db 14 by
default, or RabbitMQ with `--broker amqp://...`), real worker processes
(`celery -A webhooks_project worker -P threads`), and a loopback receiver process that records
when each request arrived. See the README's "Benchmark" section.

The command re-executes itself once with the benchmark's environment (its DATABASE_URL, broker
and production-like settings: DEBUG off), so nothing it does can reach the developer's database.
"""

import base64
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

CHILD_FLAG = "WEBHOOKS_BENCH_CHILD"
SCENARIOS = ("burst", "ordered", "limited", "steady", "fanout", "slow", "hol")
EXTRA_SCENARIOS = ("soak",)


class Command(BaseCommand):
    help = "Benchmark the delivery pipeline on PostgreSQL, a real broker, worker processes and a loopback receiver."
    requires_system_checks = []

    def add_arguments(self, parser) -> None:
        add = parser.add_argument
        add(
            "--scenario",
            "--scenarios",
            dest="scenario",
            default="all",
            help=f"comma-separated: {', '.join(SCENARIOS + EXTRA_SCENARIOS)} or all",
        )
        add("--broker", default="redis://127.0.0.1:6379/14", help="redis://... (not db 15) or amqp://...")
        add("--database", default="webhooks_bench", help="database created on DATABASE_URL's server")
        add("--workers", type=int, default=1, help="worker processes")
        add("--concurrency", type=int, default=32, help="threads per worker process (the Procfile's 32)")
        add("--compare-workers", default="", help="also run the burst with each of these worker counts, e.g. 1,2")
        add("--burst-events", type=int, default=2000)
        add("--publish-batch", type=int, default=100, help="events per publish_many() transaction in bursts")
        add("--ordering-keys", type=int, default=50, help="ordered: the burst's events take this many keys in turn")
        add(
            "--limited-rate-limit",
            type=int,
            default=10_000,
            help="limited: the endpoint's limit per second, above what the burst reaches (at most 10,000)",
        )
        add(
            "--limited-binding-events",
            type=int,
            default=1000,
            help="limited: then this many events to an endpoint the next option limits (0: skip)",
        )
        add("--limited-binding-limit", type=int, default=200, help="limited: requests per second that bind")
        add("--steady-rate", type=float, default=50.0, help="events per second")
        add("--steady-seconds", type=float, default=20.0)
        add("--fanout-endpoints", type=int, default=1000)
        add("--fanout-repeat", type=int, default=3, help="fan-outs one after the other; medians are reported")
        add("--slow-events", type=int, default=1000)
        add("--slow-delay-ms", type=int, default=100)
        add("--hol-healthy", type=int, default=9, help="healthy endpoints beside the one that times out")
        add("--hol-rate", type=float, default=3.0, help="events per second (each goes to every endpoint)")
        add("--hol-seconds", type=float, default=15.0, help="length of each of the two phases")
        add("--hol-request-timeout", type=float, default=5.0, help="the workers' WEBHOOKS_REQUEST_TIMEOUT")
        add("--soak-deliveries", type=int, default=100_000)
        add("--soak-chunk", type=int, default=5000)
        add("--drain-timeout", type=float, default=120.0, help="longest wait without a new delivery arriving")
        add("--worker-loglevel", default="INFO", help="the Procfile's INFO logs every task")
        add("--worker-env", action="append", default=[], metavar="NAME=VALUE", help="extra worker environment")
        add("--log-dir", default="", help="worker and receiver logs (default var/bench/<time>)")
        add("--json-out", default="", help="write the results here as JSON")

    def handle(self, *args, **options) -> None:
        scenarios = self.scenarios(options["scenario"])
        self.check_sizes(options)
        if os.environ.get(CHILD_FLAG) != "1":
            self.reexec(options)
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
        try:
            results = self.run(scenarios, options)
        except KeyboardInterrupt:
            raise CommandError("interrupted; every worker and the receiver were stopped") from None
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        if options["json_out"]:
            Path(options["json_out"]).write_text(json.dumps(results, indent=2, default=str) + "\n")
            self.stdout.write(f"results written to {options['json_out']}")

    @staticmethod
    def scenarios(value: str) -> list[str]:
        names = [name.strip() for name in value.split(",") if name.strip()]
        if "all" in names:
            names = [*SCENARIOS, *[n for n in names if n in EXTRA_SCENARIOS]]
        unknown = set(names) - set(SCENARIOS + EXTRA_SCENARIOS)
        if unknown or not names:
            raise CommandError(f"unknown scenario {sorted(unknown)}; choose from {SCENARIOS + EXTRA_SCENARIOS} or all")
        return names

    @staticmethod
    def check_sizes(options: dict) -> None:
        from endpoints.rate_limits import MAX_RATE_LIMIT

        if options["ordering_keys"] < 1:
            raise CommandError("--ordering-keys must be at least 1")
        for name in ("limited_rate_limit", "limited_binding_limit"):
            if not 1 <= options[name] <= MAX_RATE_LIMIT:
                raise CommandError(f"--{name.replace('_', '-')} must be between 1 and {MAX_RATE_LIMIT}")
        # Waits longer than WEBHOOKS_MAX_COUNTDOWN (60 s) are left to the sweep, and the benchmark
        # runs no beat: keep the binding run well inside it.
        if options["limited_binding_events"] > 30 * options["limited_binding_limit"]:
            raise CommandError("--limited-binding-events may be at most 30 s of --limited-binding-limit")

    def reexec(self, options: dict) -> None:
        """Run again, in this process, with the benchmark's environment."""
        from bench.environment import EnvironmentError_, bench_database_url, broker_kind, redis_db

        if len(sys.argv) < 2 or sys.argv[1] != "webhooks_bench":
            raise CommandError("run the benchmark as `python manage.py webhooks_bench ...`")
        try:
            database_url = bench_database_url(options["database"])
            if broker_kind(options["broker"]) == "redis" and redis_db(options["broker"]) == 15:
                raise EnvironmentError_("Redis db 15 belongs to the test suite: use another db")
        except EnvironmentError_ as exc:
            raise CommandError(str(exc)) from None
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("WEBHOOKS_", "CELERY_", "DJANGO_"))}
        keep.pop("DATABASE_URL", None)
        env = {
            **keep,
            CHILD_FLAG: "1",
            "DJANGO_SETTINGS_MODULE": "webhooks_project.settings",
            "DJANGO_DEBUG": "0",  # DEBUG keeps every query in memory: not what production runs
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(32),
            "DJANGO_ALLOWED_HOSTS": "localhost",
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": options["broker"],
            "WEBHOOKS_ALLOW_PRIVATE_NETWORKS": "1",  # the receiver is on loopback, over plain http
            "WEBHOOKS_ALLOW_HTTP": "1",
            # A Fernet key of this run for secrets at rest (the tables are emptied before each scenario).
            "WEBHOOKS_SECRET_KEYS": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "WEBHOOKS_HEALTH_MAIL_ADMINS": "0",
            "PYTHONUNBUFFERED": "1",
        }
        manage = Path(settings.BASE_DIR) / "manage.py"
        os.execve(sys.executable, [sys.executable, str(manage), *sys.argv[1:]], env)

    def run(self, scenarios: list[str], options: dict) -> dict:
        from bench import delivery_control
        from bench import scenarios as bench_scenarios
        from bench.environment import EnvironmentError_, empty_broker, ensure_database, lock_database
        from bench.fleet import service_pids
        from bench.measure import PUBLISHER
        from bench.receiver import ReceiverProcess
        from bench.report import check_targets, overhead_vs_burst, table, targets_text
        from bench.run import Bench

        database_url, broker = os.environ["DATABASE_URL"], os.environ["CELERY_BROKER_URL"]
        log_dir = Path(options["log_dir"] or Path(settings.VAR_DIR) / "bench" / time.strftime("%Y%m%d-%H%M%S"))
        log_dir.mkdir(parents=True, exist_ok=True)
        created = ensure_database(database_url)
        try:
            self.run_lock = lock_database(database_url)
            empty_broker(broker, refuse_if_used=True)
        except EnvironmentError_ as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:
            raise CommandError(f"the broker at {broker} does not answer: {exc}") from None
        self.stdout.write(f"database {urlsplit(database_url).path.lstrip('/')}{' (created)' if created else ''}")
        call_command("migrate", interactive=False, verbosity=0)
        PUBLISHER.install()
        worker_env = dict(os.environ)
        worker_env.pop(CHILD_FLAG)
        for pair in options["worker_env"]:
            name, sep, value = pair.partition("=")
            if not sep:
                raise CommandError(f"--worker-env takes NAME=VALUE, not {pair!r}")
            worker_env[name] = value
        receiver = ReceiverProcess(log_dir / "receiver.log", _launcher())
        broker_port = urlsplit(broker).port or (6379 if broker.startswith("redis") else 5672)
        bench = Bench(
            receiver=receiver,
            worker_env=worker_env,
            broker_url=broker,
            log_dir=log_dir,
            workers=options["workers"],
            concurrency=options["concurrency"],
            loglevel=options["worker_loglevel"],
            drain_timeout=options["drain_timeout"],
            pg_pids=service_pids(urlsplit(database_url).port or 5432),
            broker_pids=service_pids(broker_port),
            say=self.stdout.write,
        )
        results = {"meta": self.meta(options, broker, log_dir), "scenarios": {}}
        o = options
        runners = {
            "burst": lambda: bench_scenarios.burst(bench, o["burst_events"], o["publish_batch"]),
            "ordered": lambda: delivery_control.ordered(
                bench, o["burst_events"], o["publish_batch"], o["ordering_keys"]
            ),
            "limited": lambda: delivery_control.limited(
                bench,
                o["burst_events"],
                o["publish_batch"],
                o["limited_rate_limit"],
                o["limited_binding_events"],
                o["limited_binding_limit"],
            ),
            "steady": lambda: bench_scenarios.steady(bench, o["steady_rate"], o["steady_seconds"]),
            "fanout": lambda: bench_scenarios.fanout(bench, o["fanout_endpoints"], o["fanout_repeat"]),
            "slow": lambda: bench_scenarios.slow(bench, o["slow_events"], o["slow_delay_ms"], o["publish_batch"]),
            "hol": lambda: bench_scenarios.hol(
                bench, o["hol_healthy"], o["hol_rate"], o["hol_seconds"], o["hol_request_timeout"]
            ),
            "soak": lambda: bench_scenarios.soak(bench, o["soak_deliveries"], o["soak_chunk"], o["publish_batch"]),
        }
        try:
            for name in scenarios:
                self.stdout.write(f"{name}:")
                started = time.monotonic()
                results["scenarios"][name] = runners[name]()
                results["scenarios"][name]["scenario_seconds"] = round(time.monotonic() - started, 1)
            counts = [int(c) for c in options["compare_workers"].split(",") if c.strip()]
            if counts:
                results["scenarios"]["compare_workers"] = {}
                for count in counts:
                    self.stdout.write(f"burst with {count} worker process(es):")
                    result = bench_scenarios.burst(bench, o["burst_events"], o["publish_batch"], workers=count)
                    results["scenarios"]["compare_workers"][str(count)] = result
        finally:
            receiver.stop()
        results["targets"] = check_targets(results["scenarios"])
        results["overhead_vs_burst"] = overhead_vs_burst(results["scenarios"])
        results["meta"]["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.stdout.write("\n" + table(results["scenarios"]))
        self.stdout.write("\ntargets (issues 7 and 15):\n" + targets_text(results["targets"]))
        self.stdout.write(f"logs: {log_dir}")
        return results

    @staticmethod
    def meta(options: dict, broker: str, log_dir: Path) -> dict:
        import celery
        import django
        import kombu

        try:
            commit = subprocess.run(
                ["git", "describe", "--always", "--dirty"],
                check=False,
                cwd=settings.BASE_DIR,
                capture_output=True,
                text=True,
            ).stdout.strip()
        except OSError:
            commit = ""
        return {
            "command": "python manage.py " + " ".join(sys.argv[1:]),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "broker": urlsplit(broker)._replace(netloc=urlsplit(broker).hostname or "").geturl(),
            "database": settings.DATABASES["default"]["NAME"],
            "workers": options["workers"],
            "concurrency": options["concurrency"],
            "worker_loglevel": options["worker_loglevel"],
            "worker_env": options["worker_env"],
            "cpus": os.cpu_count(),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),
            "versions": {
                "python": platform.python_version(),
                "django": django.get_version(),
                "celery": celery.__version__,
                "kombu": kombu.__version__,
            },
            "commit": commit,
            "log_dir": str(log_dir),
        }


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _launcher() -> list[str]:
    from bench.fleet import LAUNCHER

    return LAUNCHER
