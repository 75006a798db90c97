"""The Containerfile, checked without a container engine (none runs in CI).

Every file it copies exists, what it runs is the console script setup.cfg
installs, it runs unprivileged with the Go image's defaults and no secret,
and its health check command is valid Python aimed at /healthz.
"""
from __future__ import annotations

import ast
import configparser
import json
import re
import shlex

from support import ROOT

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


def test_healthcheck_probes_healthz() -> None:
    check = _all("HEALTHCHECK")[0]
    cmd = json.loads(check[check.index("CMD") + 3:].strip())
    assert cmd[:2] == ["python", "-c"]
    ast.parse(cmd[2])  # valid Python
    assert "/healthz" in cmd[2] and "REST_PORT" in cmd[2]


def test_context_leaves_out_local_clutter() -> None:
    ignored = (ROOT / ".containerignore").read_text().split()
    assert ".venv/" in ignored and ".git/" in ignored
    assert (ROOT / ".dockerignore").read_text() == (ROOT / ".containerignore").read_text()
