"""``pip install .`` gives a working gateway: code, bundled descriptors, command.

The wheel is built offline (``--no-index``, no build isolation) from a copy of
the source tree without build products, as a clean checkout would be: a
stale ``build/`` folder would otherwise leak old files into the wheel and
hide a packaging mistake.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from gateway import __version__
from support import ROOT

BUILD_TIMEOUT = 60  # seconds: an offline wheel build takes about one
REQUIRED = ("aiohttp", "grpcio", "grpcio-reflection", "protobuf", "orjson", "pyjwt", "aiolimiter",
            "prometheus-client")
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                    "*.pyc", ".pytest_cache", ".hypothesis")


def _offline_env() -> dict[str, str]:
    """pip must never reach an index, whatever the machine's pip.conf says."""
    return {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    checkout = tmp_path_factory.mktemp("checkout") / "opencue-gateway"
    shutil.copytree(ROOT, checkout, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(out), str(checkout)],
        capture_output=True, text=True, env=_offline_env(), timeout=BUILD_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(out.glob("opencue_gateway-*.whl"))
    assert len(wheels) == 1, list(out.iterdir())
    return wheels[0]


def _dist_info(z: zipfile.ZipFile, name: str) -> str:
    matches = [n for n in z.namelist() if n.endswith(f".dist-info/{name}")]
    assert len(matches) == 1, z.namelist()
    return z.read(matches[0]).decode()


def test_wheel_name_carries_the_version(wheel: Path) -> None:
    assert wheel.name.startswith(f"opencue_gateway-{__version__}-")


def test_wheel_ships_the_bundled_descriptors(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        assert z.read("gateway/bundled/opencue.binpb") == \
            (ROOT / "descriptors" / "opencue.binpb").read_bytes()


def test_wheel_ships_every_gateway_module(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert "gateway/transcode.py" in names
    for module in (ROOT / "gateway").glob("*.py"):
        assert f"gateway/{module.name}" in names, module.name
    assert not any(n.startswith(("tests/", "scripts/", "descriptors/")) for n in names), names


def test_wheel_declares_the_console_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        entry_points = _dist_info(z, "entry_points.txt")
    lines = [ln.strip() for ln in entry_points.splitlines()]
    assert "[console_scripts]" in lines
    assert "opencue-gateway = gateway.cli:main" in lines


def test_wheel_requires_the_runtime_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        meta = Parser().parsestr(_dist_info(z, "METADATA"))
    assert meta["Name"] == "opencue-gateway" and meta["Version"] == __version__
    unconditional = {}
    for req in meta.get_all("Requires-Dist") or []:
        if ";" in req:
            continue  # extras such as [proto] and [test]
        name = req.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower()
        unconditional[name] = req
    for dep in REQUIRED:
        assert dep in unconditional, (dep, sorted(unconditional))


def test_installed_wheel_runs_from_its_own_files(wheel: Path, tmp_path: Path) -> None:
    """Installed, the package finds its descriptors in itself, not in a checkout."""
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
         str(wheel)],
        capture_output=True, text=True, env=_offline_env(), timeout=BUILD_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check = (
        "import gateway, gateway.descriptors as d\n"
        "p = d.bundled_path()\n"
        "print(gateway.__file__)\n"
        "print(p)\n"
        "print(len(d.load_bundled().services))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    module, bundled, services = proc.stdout.split()
    assert Path(module).is_relative_to(site)
    assert Path(bundled) == site / "gateway" / "bundled" / "opencue.binpb"
    assert int(services) > 20


def test_console_script_is_installed_next_to_python() -> None:
    """The test command installs the package first, so the command must be there."""
    script = Path(sys.executable).parent / ("opencue-gateway.exe" if os.name == "nt"
                                            else "opencue-gateway")
    assert script.is_file(), f"{script} missing: install the package (pip install .)"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                          cwd=Path(sys.executable).parent, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"opencue-gateway {__version__}"
