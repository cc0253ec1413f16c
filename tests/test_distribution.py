"""The distribution: `python -m build` makes a wheel and an sdist of django-webhook-sender that
hold the three apps with their migrations, templates and management commands, and nothing else,
and `twine check` passes on both.

The build (tests/distribution.py, shared with the host project's test) runs on a copy of the
checkout's files: a fresh clone's view.
"""

import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement

import endpoints
from tests.distribution import checkout_files

# Building takes seconds on an idle machine; the limit only stops a hung build.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
NAME = "django_webhook_sender"
PACKAGES = ("endpoints", "deliveries", "webhook_receiver")
NEVER_SHIPPED = ("tests", "webhooks_project", "bench", "docker")


@pytest.fixture(scope="module")
def dist(built_distributions) -> Path:
    return built_distributions


@pytest.fixture(scope="module")
def wheel_files(dist) -> list[str]:
    with zipfile.ZipFile(dist / f"{NAME}-{endpoints.__version__}-py3-none-any.whl") as wheel:
        return wheel.namelist()


@pytest.fixture(scope="module")
def sdist_files(dist) -> list[str]:
    prefix = f"{NAME}-{endpoints.__version__}/"
    with tarfile.open(dist / f"{NAME}-{endpoints.__version__}.tar.gz") as sdist:
        return [member.name.removeprefix(prefix) for member in sdist.getmembers() if member.isfile()]


def shipped_sources() -> list[str]:
    """The checkout's files of the three apps that a host needs: code, templates, static files."""
    return [
        name
        for name in checkout_files()
        if PurePosixPath(name).parts[0] in PACKAGES
        and (name.endswith(".py") or "/templates/" in name or "/static/" in name)
    ]


def test_the_default_user_agent_names_the_version(settings):
    assert settings.WEBHOOKS_USER_AGENT == f"django-webhook-sender/{endpoints.__version__}"


def test_the_version_is_read_from_one_place(dist):
    assert endpoints.__version__ == "0.2.0"
    assert sorted(path.name for path in dist.iterdir()) == [
        f"{NAME}-0.2.0-py3-none-any.whl",
        f"{NAME}-0.2.0.tar.gz",
    ]


def test_the_wheel_holds_the_three_apps_and_nothing_else(wheel_files):
    top_level = {PurePosixPath(name).parts[0] for name in wheel_files}
    assert top_level == {*PACKAGES, f"{NAME}-{endpoints.__version__}.dist-info"}


def test_the_wheel_holds_every_module_migration_template_and_command_of_the_apps(wheel_files):
    missing = sorted(set(shipped_sources()) - set(wheel_files))
    assert not missing, f"in the checkout but not in the wheel: {missing}"
    for expected in (
        "endpoints/migrations/0001_initial.py",
        "deliveries/migrations/0001_initial.py",
        "endpoints/management/commands/reencrypt_secrets.py",
        "deliveries/management/commands/retry_failed.py",
        "deliveries/templates/deliveries/admin/delivery_change_form.html",
        "webhook_receiver/django.py",
    ):
        assert expected in wheel_files


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_neither_archive_ships_the_suite_the_demo_project_or_the_benchmark(kind, wheel_files, sdist_files):
    files = wheel_files if kind == "wheel" else sdist_files
    leaked = [name for name in files if PurePosixPath(name).parts[0] in NEVER_SHIPPED]
    assert not leaked, f"the {kind} ships {leaked}"
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]


def test_the_sdist_holds_the_apps_readme_and_changelog(sdist_files):
    assert {"pyproject.toml", "README.md", "CHANGELOG.md"} <= set(sdist_files)
    missing = sorted(set(shipped_sources()) - set(sdist_files))
    assert not missing, f"in the checkout but not in the sdist: {missing}"


def test_the_metadata_names_the_runtime_dependencies_and_leaves_the_database_driver_to_the_host(dist):
    with zipfile.ZipFile(dist / f"{NAME}-{endpoints.__version__}-py3-none-any.whl") as wheel:
        metadata = Parser().parsestr(wheel.read(f"{NAME}-{endpoints.__version__}.dist-info/METADATA").decode())
    assert metadata["Name"] == "django-webhook-sender"
    assert metadata["Version"] == endpoints.__version__
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "Framework :: Django :: 5.2" in metadata.get_all("Classifier")
    requires = [Requirement(line) for line in metadata.get_all("Requires-Dist")]
    core = {r.name.lower() for r in requires if r.marker is None}
    assert {"django", "celery", "django-celery-beat", "requests-hardened", "cryptography"} <= core
    # Only what the demo project or the suite needs stays out of a host's install.
    assert not core & {"psycopg2-binary", "dj-database-url", "gunicorn", "pytest", "standardwebhooks"}
    assert set(metadata.get_all("Provides-Extra")) >= {"postgres", "dev"}


def test_twine_check_passes(dist):
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir()))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
