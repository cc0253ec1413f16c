"""Child processes of `manage.py webhooks_demo` (worker, beat, admin server), logged to files."""

import subprocess
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError


def shown(path: Path) -> str:
    """`path` relative to the current directory when it is inside it, for shorter messages."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Processes:
    """Child processes with their output in log files; `stop_all` ends every one of them."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir, self.env = log_dir, env
        self.running: dict[str, tuple[subprocess.Popen, Path]] = {}

    def start(self, name: str, argv: list[str]) -> Path:
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as output:
            # A session of its own: Ctrl-C reaches only the demo, which then stops the children
            # in order instead of having them all interrupted at once.
            process = subprocess.Popen(
                argv,
                cwd=settings.BASE_DIR,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running[name] = (process, log)
        return log

    def check_alive(self) -> None:
        for name, (process, log) in self.running.items():
            if process.poll() is not None:
                raise CommandError(f"the {name} stopped (exit code {process.returncode}); see {shown(log)}")

    def stop_all(self, timeout: float = 10.0) -> None:
        for process, _ in self.running.values():
            if process.poll() is None:
                process.terminate()  # Celery's warm shutdown: running tasks finish
        deadline = time.monotonic() + timeout
        for process, _ in self.running.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()
