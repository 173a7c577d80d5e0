"""The presets are package data: a wheel holds them, and a plain (not editable) install finds them by name
from any directory."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from reinforcepp.presets import preset_names

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def run(*args, cwd, env=None):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built offline from a copy of the sources (the build leaves build/ and *.egg-info behind)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "reinforcepp", src / "reinforcepp", ignore=shutil.ignore_patterns("__pycache__"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", ".",
        "-w", str(tmp / "dist"), cwd=src)
    (path,) = (tmp / "dist").glob("reinforcepp-*.whl")
    return path


def test_the_wheel_holds_every_preset(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"reinforcepp/presets/{name}.yaml" for name in preset_names()} <= set(names)


def test_an_installed_wheel_lists_and_loads_presets_from_any_directory(wheel, tmp_path):
    site = tmp_path / "site"
    run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel),
        cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    where = run(sys.executable, "-c", "import reinforcepp; print(reinforcepp.__file__)", cwd=elsewhere, env=env)
    assert Path(where.strip()).is_relative_to(site)  # the installed copy, not the checkout
    listed = run(sys.executable, "-m", "reinforcepp", "presets", cwd=elsewhere, env=env)
    assert [line.split()[0] for line in listed.splitlines()] == preset_names()
    printed = run(sys.executable, "-m", "reinforcepp", "config", "--config", "grpo", cwd=elsewhere, env=env)
    assert "estimator: grpo" in printed
