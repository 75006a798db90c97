"""deploy/: the Kubernetes manifests and the docker-compose drop-in, checked without a cluster.

Parsed as YAML, their settings are checked against the gateway's own: every environment
variable they set is one of config.OPTIONS and parses as the gateway would parse it, the
probes ask paths the gateway serves open, ports and user match the Containerfile, the
grace periods nest, the workers match the CPUs. The compose file is checked against the
facts of OpenCue's own docker-compose.yml that a drop-in must keep.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import config
from gateway.app import OPEN_PATHS
from support import ROOT

K8S = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "compose" / "rest-gateway.yaml"
CONTAINERFILE = (ROOT / "Containerfile").read_text()
ENV_NAMES = {o.env for o in config.OPTIONS if o.env}

# OpenCue's docker-compose.yml (AcademySoftwareFoundation/OpenCue, read at commit 1cea9a8):
# the Go gateway's service, its published port and variables, and how CueWeb reaches it.
OPENCUE_SERVICE = "rest-gateway"
OPENCUE_PORT = "8448:8448"
OPENCUE_ENV = {"CUEBOT_ENDPOINT": "cuebot:8443", "REST_PORT": "8448", "LOG_LEVEL": "info",
               "JWT_SECRET": None}
OPENCUE_CUEWEB_ENDPOINT = ("NEXT_PUBLIC_OPENCUE_ENDPOINT", "http://rest-gateway:8448")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in _docs(path):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


MANIFESTS = _manifests()
DEPLOYMENT = MANIFESTS[("Deployment", "opencue-gateway")]
POD = DEPLOYMENT["spec"]["template"]["spec"]
CONTAINER = POD["containers"][0]
CONFIG = MANIFESTS[("ConfigMap", "opencue-gateway")]["data"]


def _containerfile(word: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", CONTAINERFILE)
    return [ln.split(None, 1)[1] for ln in joined.splitlines()
            if ln.strip() and ln.split(None, 1)[0] == word]


def _image_env() -> dict[str, str]:
    return dict(item.split("=", 1) for line in _containerfile("ENV") for item in line.split())


def _gateway_environ() -> dict[str, str]:
    """What the gateway container's process sees: the ConfigMap, then the explicit env."""
    environ = dict(_image_env())
    for source in CONTAINER.get("envFrom", []):
        name = source["configMapRef"]["name"]
        environ.update(MANIFESTS[("ConfigMap", name)]["data"])
    for item in CONTAINER.get("env", []):
        environ[item["name"]] = item["value"]
    return environ


# ---------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------
def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    kinds = {kind for kind, _ in MANIFESTS}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} <= kinds


def test_every_variable_set_is_a_setting_and_parses() -> None:
    environ = _gateway_environ()
    set_here = set(CONFIG) | {e["name"] for e in CONTAINER.get("env", [])}
    assert set_here <= ENV_NAMES, set_here - ENV_NAMES
    cfg = config.load([], environ)  # what the gateway would do with them: no ConfigError
    assert cfg.workers == int(CONFIG["WORKERS"]) and cfg.port == 8448
    assert cfg.rate_limit_redis_url and cfg.jwt_secret is None and cfg.jwt_secret_file


def test_the_secret_is_a_mounted_file_not_a_variable() -> None:
    assert "JWT_SECRET" not in CONFIG and not any(
        e["name"] == "JWT_SECRET" for e in CONTAINER.get("env", []))
    secret_file = Path(_gateway_environ()["JWT_SECRET_FILE"])
    mounts = {m["name"]: m for m in CONTAINER["volumeMounts"]}
    volumes = {v["name"]: v for v in POD["volumes"]}
    jwt = next(name for name, v in volumes.items() if "secret" in v)
    assert secret_file.parent == Path(mounts[jwt]["mountPath"]) and mounts[jwt]["readOnly"]
    assert volumes[jwt]["secret"]["secretName"] == "opencue-gateway-jwt"
    assert "opencue-gateway-jwt" in (K8S / "kustomization.yaml").read_text()  # how to make it


def test_ports_and_probes_match_the_container_image() -> None:
    exposed = int(_containerfile("EXPOSE")[0])
    assert int(_image_env()["REST_PORT"]) == exposed == int(CONFIG["REST_PORT"])
    ports = {p["name"]: p["containerPort"] for p in CONTAINER["ports"]}
    assert list(ports.values()) == [exposed]
    probes = {k: CONTAINER[k]["httpGet"] for k in ("livenessProbe", "readinessProbe",
                                                    "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["path"] in OPEN_PATHS  # served without a token
        port = probe["port"]
        assert ports.get(port, port) == exposed
    service = MANIFESTS[("Service", "opencue-gateway")]["spec"]
    assert [(p["port"], ports.get(p["targetPort"], p["targetPort"])) for p in service["ports"]] \
        == [(exposed, exposed)]
    assert service["selector"].items() <= DEPLOYMENT["spec"]["template"]["metadata"][
        "labels"].items()


def test_runs_as_the_images_user_unprivileged_on_a_read_only_root() -> None:
    user = int(_containerfile("USER")[-1])
    assert POD["securityContext"]["runAsNonRoot"] is True
    assert POD["securityContext"]["runAsUser"] == user != 0
    sc = CONTAINER["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # the one writable place the gateway needs (--workers' metrics files, protoc's output)
    assert any(m["mountPath"] == "/tmp" for m in CONTAINER["volumeMounts"])


def test_two_replicas_and_a_budget_that_keeps_one() -> None:
    assert DEPLOYMENT["spec"]["replicas"] == 2
    pdb = MANIFESTS[("PodDisruptionBudget", "opencue-gateway")]["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["selector"]["matchLabels"] == DEPLOYMENT["spec"]["selector"]["matchLabels"]


def test_grace_periods_nest() -> None:
    """The drain (SHUTDOWN_GRACE from the signal, exit within it plus 1 s) ends before the
    kubelet's SIGKILL, and the still-accepting delay is part of it."""
    cfg = config.load([], _gateway_environ())
    assert 0 < cfg.shutdown_delay < cfg.shutdown_grace
    assert POD["terminationGracePeriodSeconds"] > cfg.shutdown_grace + 1


def _cpus(text: str) -> float:
    return float(text[:-1]) / 1000 if str(text).endswith("m") else float(text)


def test_workers_match_the_cpus_and_resources_are_set() -> None:
    resources = CONTAINER["resources"]
    workers = int(CONFIG["WORKERS"])
    assert _cpus(resources["requests"]["cpu"]) == _cpus(resources["limits"]["cpu"]) == workers
    for kind in ("requests", "limits"):
        assert re.fullmatch(r"\d+Mi", resources[kind]["memory"]), resources
    assert int(resources["limits"]["memory"][:-2]) > int(resources["requests"]["memory"][:-2])
    comment = (K8S / "deployment.yaml").read_text()
    assert "scripts/measure_memory.py" in comment and (ROOT / "scripts" /
                                                       "measure_memory.py").is_file()


def test_shared_limits_have_a_redis_to_use() -> None:
    url = CONFIG["RATE_LIMIT_REDIS_URL"]
    host, port = re.fullmatch(r"redis://([^:/]+):(\d+)/\d+", url).groups()
    service = MANIFESTS[("Service", host)]["spec"]
    assert [p["port"] for p in service["ports"]] == [int(port)]
    redis = MANIFESTS[("Deployment", host)]["spec"]["template"]["spec"]
    assert redis["securityContext"]["runAsNonRoot"] is True
    assert redis["containers"][0]["resources"]["limits"]


# ---------------------------------------------------------------------------
# docker-compose: in place of OpenCue's rest-gateway
# ---------------------------------------------------------------------------
def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


COMPOSED = yaml.safe_load(COMPOSE.read_text())["services"]


def test_compose_keeps_the_go_gateways_name_port_and_variables() -> None:
    gateway = COMPOSED[OPENCUE_SERVICE]
    assert gateway["ports"] == [OPENCUE_PORT]
    env = _env(gateway)
    assert set(env) <= ENV_NAMES
    for name, value in OPENCUE_ENV.items():
        assert name in env, name
        if value is not None:
            assert env[name] == value, name
    # the secret defaults as CueWeb's does, from the same variable
    assert env["JWT_SECRET"] == _env(COMPOSED["cueweb"])["NEXT_JWT_SECRET"]
    assert env["JWT_SECRET"].startswith("${JWT_SECRET")


def test_compose_builds_this_image_with_a_check_it_can_run() -> None:
    gateway = COMPOSED[OPENCUE_SERVICE]
    assert gateway["build"]["dockerfile"] == "Containerfile"
    test = gateway["healthcheck"]["test"]
    assert test == ["CMD", "python", "-m", "gateway.healthcheck"]  # no curl in the image


def test_compose_points_cueweb_at_it() -> None:
    cueweb = COMPOSED["cueweb"]
    name, url = OPENCUE_CUEWEB_ENDPOINT
    assert _env(cueweb)[name] == url
    assert url.endswith(":" + OPENCUE_PORT.split(":")[1])
    assert cueweb["depends_on"][OPENCUE_SERVICE]["condition"] == "service_healthy"


@pytest.mark.parametrize("target", ["deploy/kubernetes/", "deploy/compose/"])
def test_readme_deploying_links_both(target: str) -> None:
    readme = (ROOT / "README.md").read_text()
    deploying = readme[readme.index("## Deploying"):]
    deploying = deploying[:deploying.index("\n## ", 1)]
    assert f"]({target})" in deploying
