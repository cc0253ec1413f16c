"""The deployment files agree: Procfile, docker/compose.yaml and docker/Dockerfile (pure parsing).

Compose runs each Procfile command as `["sh", "-c", "<the Procfile command>"]`, string for string,
and so does the Dockerfile's default CMD (the web command).
"""

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from deliveries.celery import DELIVERY_QUEUE, FANOUT_QUEUE, MAINTENANCE_QUEUE, RETRY_QUEUE
from webhooks_project.celery import app

ROOT = Path(__file__).resolve().parent.parent
PROCESS_TYPES = ("web", "worker", "retry_worker", "beat")
WORKERS = ("worker", "retry_worker")
PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


def read_procfile() -> dict[str, str]:
    """Process type -> command, as Heroku/honcho read it: `name: command`, `#` lines ignored."""
    processes = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PROCFILE_LINE.match(line)
        assert match, f"not a Procfile line: {line!r}"
        name, command = match.groups()
        assert name not in processes, f"process type {name!r} defined twice"
        processes[name] = command.strip()
    return processes


def read_compose() -> dict:
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def shell_command(command: str) -> list[str]:
    return ["sh", "-c", command]


def option(args: list[str], *names: str) -> str | None:
    """The value of a command-line option given as `-X value`, `--long value` or `--long=value`."""
    for index, arg in enumerate(args):
        if arg in names and index + 1 < len(args):
            return args[index + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def runs_beat(command: list[str] | str) -> bool:
    """True for `celery ... beat` and for a worker with an embedded beat (-B/--beat)."""
    if isinstance(command, list):
        command = command[2] if command[:2] == ["sh", "-c"] else shlex.join(command)
    args = shlex.split(command)
    return "celery" in args and ("beat" in args or "-B" in args or "--beat" in args)


def test_procfile_defines_web_worker_and_beat():
    assert set(read_procfile()) == set(PROCESS_TYPES)


@pytest.mark.parametrize("process", PROCESS_TYPES)
def test_compose_runs_the_procfile_command(process):
    service = read_compose()["services"][process]
    assert service["command"] == shell_command(read_procfile()[process])


def test_procfile_commands_survive_compose_interpolation():
    # Compose substitutes `$VAR` in `command`: a `$` would make compose run another string.
    for process, command in read_procfile().items():
        assert "$" not in command, process


def test_dockerfile_default_command_is_the_web_process():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    cmds = [line for line in dockerfile.splitlines() if line.startswith("CMD ")]
    assert len(cmds) == 1
    assert json.loads(cmds[0].removeprefix("CMD ")) == shell_command(read_procfile()["web"])


def test_dockerfile_runs_as_a_non_root_user():
    users = [
        line.split()[1]
        for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ]
    assert users
    assert users[-1] not in ("root", "0")


@pytest.mark.parametrize("process", WORKERS)
def test_workers_use_the_threads_pool(process):
    args = shlex.split(read_procfile()[process])
    assert args[:4] == ["celery", "-A", "webhooks_project", "worker"]
    assert option(args, "-P", "--pool") == "threads"


def queues_of(process: str) -> set[str]:
    return set(option(shlex.split(read_procfile()[process]), "-Q", "--queues").split(","))


def test_the_workers_together_consume_every_queue_of_the_celery_app():
    assert queues_of("worker") | queues_of("retry_worker") == {queue.name for queue in app.conf.task_queues}
    assert {route["queue"] for route in app.conf.task_routes.values()} <= queues_of("worker") | queues_of(
        "retry_worker"
    )


def test_first_attempts_and_retries_have_workers_of_their_own():
    # Head-of-line isolation: a timing-out endpoint's sends (retry lane) never take the threads
    # that serve first attempts to healthy endpoints (delivery lane).
    assert queues_of("worker") == {FANOUT_QUEUE, DELIVERY_QUEUE}
    assert queues_of("retry_worker") == {RETRY_QUEUE, MAINTENANCE_QUEUE}


def test_exactly_one_beat_runs():
    procfile = read_procfile()
    assert [name for name, command in procfile.items() if runs_beat(command)] == ["beat"]
    assert "django_celery_beat.schedulers:DatabaseScheduler" in shlex.split(procfile["beat"])
    services = read_compose()["services"]
    assert [name for name, service in services.items() if runs_beat(service.get("command", []))] == ["beat"]
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_app_services_wait_for_healthy_postgres_and_redis():
    services = read_compose()["services"]
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["redis"]
    for process in PROCESS_TYPES:
        depends_on = services[process]["depends_on"]
        for backing in ("postgres", "redis"):
            assert depends_on[backing] == {"condition": "service_healthy"}, (process, backing)


@pytest.mark.parametrize("process", PROCESS_TYPES)
def test_app_services_use_postgres_and_redis_with_debug_off(process):
    service = read_compose()["services"][process]
    assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    environment = service["environment"]
    assert environment["DATABASE_URL"] == "postgres://webhooks:webhooks@postgres:5432/webhooks"
    assert environment["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    assert environment["DJANGO_DEBUG"] == "0"
    assert "DJANGO_ALLOWED_HOSTS" in environment
    # The secret key comes from the environment, never from the file.
    assert environment["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY")


def test_the_image_installs_the_web_server():
    # The image installs the apps with pyproject.toml's deploy extra, which names gunicorn.
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install -e '\.\[deploy\]'$", dockerfile, re.MULTILINE)
    deploy = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["deploy"]
    assert any(re.match(r"gunicorn\b", requirement) for requirement in deploy)
