"""The Containerfile, checked without a container engine (none runs in CI).

Every file it copies exists, what it runs is the console script setup.cfg
installs, it runs unprivileged with the Go image's defaults and no secret,
and its health check is the image's own Python, run here for real against
gateway processes over HTTP and HTTPS.
"""
from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from support import ROOT, GatewayProcess, dead_endpoint, free_port

TEXT = (ROOT / "Containerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", TEXT)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


INSTR = _instructions()


def _all(word: str) -> list[str]:
    return [rest for w, rest in INSTR if w == word]


def test_multi_stage_on_a_slim_python() -> None:
    froms = _all("FROM")
    assert len(froms) == 2 and all("python:3.11-slim" in f for f in froms)
    assert froms[0].endswith(" AS build") and "--from=build" in " ".join(_all("COPY"))


def test_everything_copied_from_the_context_exists() -> None:
    ignored = (ROOT / ".containerignore").read_text().split()
    for rest in _all("COPY"):
        if rest.startswith("--from="):
            continue
        *sources, _dest = shlex.split(rest)
        for src in sources:
            assert (ROOT / src).exists(), src
            assert not any(src.rstrip("/") == i.rstrip("/") for i in ignored), src
    # what the build stage needs to build the wheel: the package, its data, its metadata
    copied = " ".join(_all("COPY"))
    for needed in ("pyproject.toml", "setup.cfg", "README.md", "gateway/", "descriptors/"):
        assert needed in copied
    assert (ROOT / "descriptors" / "opencue.binpb").is_file()


def test_entry_point_is_the_installed_console_script() -> None:
    entry = json.loads(_all("ENTRYPOINT")[0])
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    scripts = {line.split("=")[0].strip()
               for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines()}
    assert entry == ["opencue-gateway"] and entry[0] in scripts


def test_runs_unprivileged_with_the_go_image_defaults_and_no_secret() -> None:
    user = _all("USER")
    assert user and user[-1] not in ("root", "0")
    env = " ".join(_all("ENV"))
    assert "CUEBOT_ENDPOINT=localhost:8443" in env and "REST_PORT=8448" in env
    assert "JWT_SECRET=" not in env and "SECRET" not in env.replace("JWT_SECRET_FILE", "")
    assert _all("EXPOSE") == ["8448"]


def test_healthcheck_is_the_images_own_python() -> None:
    """No curl in the image: the check is a module of the installed package."""
    check = _all("HEALTHCHECK")[0]
    cmd = json.loads(check[check.index("CMD") + 3:].strip())
    assert cmd == ["python", "-m", "gateway.healthcheck"]
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "gateway" in cfg["options"]["packages"].split()
    assert (ROOT / "gateway" / "healthcheck.py").is_file()


def test_podman_is_told_to_keep_the_healthcheck() -> None:
    """podman's default OCI format drops HEALTHCHECK with only a warning."""
    readme = (ROOT / "README.md").read_text()
    builds = [ln for text in (readme, TEXT) for ln in text.splitlines() if "podman build" in ln]
    assert builds and all("--format docker" in ln for ln in builds), builds
    for script in (ROOT / "scripts").glob("*"):
        for ln in script.read_text().splitlines():
            assert "podman build" not in ln or "--format docker" in ln, (script, ln)


def _healthcheck(pid: int, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}.items()
            if v is not None}
    return subprocess.run([sys.executable, "-m", "gateway.healthcheck", "--pid", str(pid)],
                          env=full, capture_output=True, text=True, timeout=30)


def test_healthcheck_follows_the_gateways_flags() -> None:
    """`podman run IMAGE --port N`: the port is a flag of PID 1, not a variable.

    (A real port: with --port 0 the gateway picks one that only its log names.)
    """
    gw = GatewayProcess(env={"REST_PORT": None}, port=free_port()).wait_ready()
    try:
        result = _healthcheck(gw.proc.pid, {"REST_PORT": None})
    finally:
        gw.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"healthy: http://127.0.0.1:{gw.port}/healthz: 200"


def test_healthcheck_speaks_https_when_the_gateway_does(tmp_path: Path) -> None:
    from pki import Authority

    leaf = Authority.create(tmp_path, "hc-ca").issue(tmp_path, "gateway", dns=("gateway",))
    tls = {"TLS_CERT_FILE": str(leaf.cert), "TLS_KEY_FILE": str(leaf.key)}
    gw = GatewayProcess(env=tls, port=free_port()).wait_ready()
    try:
        result = _healthcheck(gw.proc.pid, tls)
    finally:
        gw.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"healthy: https://127.0.0.1:{gw.port}/healthz: 200"


def test_healthcheck_fails_in_one_line_when_nothing_answers() -> None:
    with dead_endpoint() as endpoint:
        port = endpoint.rpartition(":")[2]
        result = _healthcheck(os.getpid(), {"REST_PORT": port})  # pytest: not a gateway
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"unhealthy: http://127.0.0.1:{port}/healthz")


def test_healthcheck_reads_every_way_a_gateway_is_started() -> None:
    from gateway.healthcheck import gateway_args

    assert gateway_args(["opencue-gateway", "--port", "9"]) == ["--port", "9"]
    assert gateway_args(["/usr/local/bin/python", "/usr/local/bin/opencue-gateway",
                         "--workers", "2"]) == ["--workers", "2"]
    assert gateway_args(["python3", "-m", "gateway", "--dev"]) == ["--dev"]
    assert gateway_args(["/sbin/tini", "--", "sleep", "1"]) == []


def test_context_leaves_out_local_clutter() -> None:
    ignored = (ROOT / ".containerignore").read_text().split()
    assert ".venv/" in ignored and ".git/" in ignored
    assert (ROOT / ".dockerignore").read_text() == (ROOT / ".containerignore").read_text()
