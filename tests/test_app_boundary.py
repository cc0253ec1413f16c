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


def imports_the_api(path: Path) -> bool:
    """Whether a module of the apps imports deliveries.api (absolutely or relatively)."""
    in_deliveries = path.parent == ROOT / "deliveries"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(a.name.startswith("deliveries.api") for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and (module == "deliveries.api" or module.startswith("deliveries.api.")):
                return True
            if node.level == 1 and in_deliveries and (module.split(".")[0] == "api" or not module):
                if module or any(alias.name == "api" for alias in node.names):
                    return True
    return False


def test_hosts_without_django_rest_framework_never_import_it():
    # The API is an optional extra: only deliveries/api (reached from the host's urls.py, never
    # from apps.py, models or tasks) imports DRF and drf-spectacular.
    api = ROOT / "deliveries" / "api"
    outside = [path for app in APPS for path in modules_of(app) if api not in path.parents]
    drf = {str(p.relative_to(ROOT)) for p in outside if imported_packages(p) & {"rest_framework", "drf_spectacular"}}
    assert drf == set()
    assert {str(p.relative_to(ROOT)) for p in outside if imports_the_api(p)} == set()
