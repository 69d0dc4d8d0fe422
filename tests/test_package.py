"""The wheel: one top-level package, the C reader inside it, usable beside a user's own packages."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SKIP_COPY = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "*.so", ".hypothesis", ".pytest_cache",
    ".ruff_cache", ".mypy_cache", "test-artifacts", "*.duckdb", "*.duckdb.*",
)  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout without any build output."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=SKIP_COPY)
    out = work / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("runlytics-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return target


def c_reader_expected() -> bool:
    """Under CI the compiler is installed (.ci/run), so the wheel must carry the reader."""
    return bool(os.environ.get("CI")) or shutil.which("cc") is not None


def test_the_wheel_holds_one_top_level_package_and_the_c_reader(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"runlytics", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    # the folders of the repository are its subpackages, data files included
    for expected in (
        "runlytics/__init__.py",
        "runlytics/writer.py",
        "runlytics/cli/__init__.py",
        "runlytics/warehouse/db.py",
        "runlytics/migrations/env.py",
        "runlytics/migrations/versions/0001_initial.py",
        "runlytics/api/static/common.js",
    ):
        assert expected in names
    readers = [n for n in names if n.startswith("runlytics/ingest/_history") and n.endswith(".so")]
    if c_reader_expected():
        assert len(readers) == 1, names


def user_folder(tmp_path: Path) -> Path:
    """A notebook's folder with its own ``warehouse`` and ``api`` packages, which must not shadow ours."""
    folder = tmp_path / "notebook"
    for name in ("warehouse", "api", "cli", "ingest"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text("raise ImportError('the user package was imported')\n")
    return folder


def test_installed_wheel_works_beside_a_users_own_packages(installed: Path, tmp_path: Path) -> None:
    folder = user_folder(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(installed)}
    probe = (
        "import runlytics, runlytics.warehouse.db, runlytics.api.app, runlytics.ingest.pipeline; "
        "print(runlytics.__file__); print(runlytics.__version__)"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=folder, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    path, version = done.stdout.split()
    assert Path(path).is_relative_to(installed)
    assert version == _version()

    shown = subprocess.run(
        [str(installed / "bin" / "runlytics"), "--version"], cwd=folder, env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    reader = "built" if c_reader_expected() else ""
    assert shown.stdout.startswith(f"runlytics {version} (C history reader: {reader}")


def test_the_installed_wheel_builds_a_warehouse(installed: Path, tmp_path: Path) -> None:
    """The migrations travel inside the package: a warehouse is built from the wheel alone."""
    folder = user_folder(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(installed)}
    db = tmp_path / "w.duckdb"
    done = subprocess.run(
        [str(installed / "bin" / "runlytics"), "ingest", str(REPO / "samples" / "jobs"), "--db", str(db), "--quiet"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    shown = subprocess.run(
        [str(installed / "bin" / "runlytics"), "analytics", "llama-sft-001", "--db", str(db)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert '"llama-sft-001"' in shown.stdout


def _version() -> str:
    namespace: dict[str, str] = {}
    exec((REPO / "runlytics" / "__init__.py").read_text(), namespace)
    return namespace["__version__"]


FOLDERS = ("api", "cli", "ingest", "migrations", "sampler", "warehouse")


def test_no_code_imports_the_folders_as_top_level_packages() -> None:
    """Run from the checkout, ``import warehouse`` would work by accident and break once installed."""

    # the project's own folders only: a glob of the checkout walked the whole .venv (7 s) to skip it
    sources = sorted(
        path
        for top in REPO.iterdir()
        # (and no hidden folder: CI's .mypy_cache and .hypothesis took 10 s to walk)
        if top.is_dir() and not top.name.startswith(".") and top.name not in ("build", "runlytics")
        for path in top.rglob("*.py")
    )
    # an import statement at a line's start, or such a line of a `python -c "..."` string (a regex,
    # not ast.walk: 5 s for the ~340 files; `import os, warehouse` is no form this code writes)
    statement = re.compile(rf"^\s*[\"']?(?:import|from)\s+(?:{'|'.join(FOLDERS)})(?:[\s.,;]|$)", re.MULTILINE)
    offenders = [
        f"{path.relative_to(REPO)}:{text.count(chr(10), 0, found.start()) + 1}"
        for path in sources
        for text in [path.read_text()]
        for found in statement.finditer(text)
    ]
    assert not offenders, offenders


def test_every_deep_only_module_exists() -> None:
    """Outside deep runs conftest skips these modules unread: a renamed one must leave the list."""
    from conftest import DEEP_MODULES, POSTGRES_IN_EVERY_RUN

    named = DEEP_MODULES | POSTGRES_IN_EVERY_RUN
    missing = sorted(name for name in named if not (REPO / "tests" / f"{name}.py").exists())
    assert not missing, missing
