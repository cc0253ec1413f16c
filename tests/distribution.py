"""The built distribution, once per test session: `built_distributions` is the directory holding
the wheel and the sdist (tests/test_distribution.py inspects them, tests/test_host_project.py
installs the wheel).

The build runs on a copy of the checkout's files (what `git ls-files` lists, plus new files not
yet added): a fresh clone's view, so leftovers of an earlier build in the working tree (build/,
*.egg-info) can neither add files nor hide missing ones. `python -m build` makes the sdist first
and the wheel from the unpacked sdist, so a file the sdist forgets is missing from the wheel too.
"""

import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

import endpoints

REPO = Path(__file__).resolve().parent.parent
NAME = "django_webhook_sender"

# Outside a git checkout (an unpacked archive), the tree less what .gitignore names.
NOT_SOURCE = (".git", ".venv", "var", "build", "dist", "artifacts", "*.egg-info", "__pycache__", "*.pyc", ".*_cache")


def checkout_files() -> list[str]:
    """The checkout's files, relative to it: tracked ones and new ones that .gitignore allows."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if listed.returncode == 0:
        names = listed.stdout.decode().split("\0")
    else:
        names = [str(path.relative_to(REPO)) for path in REPO.rglob("*")]
        names = [name for name in names if not any(fnmatch(part, p) for part in Path(name).parts for p in NOT_SOURCE)]
    return [name for name in names if name and (REPO / name).is_file()]


@pytest.fixture(scope="session")
def built_distributions(tmp_path_factory) -> Path:
    """The wheel and sdist built from a copy of the checkout, in a directory of their own."""
    source = tmp_path_factory.mktemp("source")
    for name in checkout_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    return out


@pytest.fixture(scope="session")
def built_wheel(built_distributions) -> Path:
    return built_distributions / f"{NAME}-{endpoints.__version__}-py3-none-any.whl"
