"""The installable apps hold product code only: they import neither the reference project, nor
the dev tooling, nor the tests, and endpoints never imports deliveries (DESIGN.md). The demo and
the benchmark live in `bench`, a dev-only app that webhooks_project installs."""

import ast
from pathlib import Path

import pytest
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent
APPS = ("endpoints", "deliveries", "webhook_receiver")
NOT_FROM_APPS = {"webhooks_project", "bench", "tests"}


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports (absolute imports; relative ones stay inside)."""
    packages = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            packages.add(node.module.split(".")[0])
    return packages


def modules_of(app: str) -> list[Path]:
    modules = sorted((ROOT / app).rglob("*.py"))
    assert modules, f"no modules found under {app}/"
    return modules


@pytest.mark.parametrize("app", APPS)
def test_no_module_of_the_apps_imports_the_project_the_dev_tooling_or_the_tests(app):
    offending = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & NOT_FROM_APPS) for path in modules_of(app)
    }
    assert {path: names for path, names in offending.items() if names} == {}


def test_endpoints_never_imports_deliveries():
    offending = [
        str(path.relative_to(ROOT)) for path in modules_of("endpoints") if "deliveries" in imported_packages(path)
    ]
    assert offending == []


def test_the_demo_and_the_benchmark_are_commands_of_the_dev_only_app():
    commands = get_commands()
    assert commands["webhooks_demo"] == "bench"
    assert commands["webhooks_bench"] == "bench"
    assert not list((ROOT / "deliveries").rglob("*demo*")) and not list((ROOT / "deliveries").rglob("*bench*"))
