"""The image's ``HEALTHCHECK``: ``python -m gateway.healthcheck`` asks this gateway's ``/healthz``.

The slim image has no curl, and a fixed ``http://`` URL made a container that
serves HTTPS (``TLS_CERT_FILE``) unhealthy forever. This reads the settings
the gateway itself runs with — the container's environment and the command
line of the gateway process (PID 1 in a container: ``podman run IMAGE --port
9000`` passes flags, not variables) — and asks ``/healthz`` on the loopback
address it listens on, over HTTPS when it serves HTTPS. The certificate is
not verified: this checks that the process answers, from inside the same
container, not who it is. Exit 0 when it answers 200, else 1 with one line
saying why.
"""
from __future__ import annotations

import argparse
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

from . import config

TIMEOUT = 2.0


def gateway_args(cmdline: Sequence[str]) -> list[str]:
    """The gateway's own arguments in a process's command line (``[]`` if not a gateway).

    Forms: ``opencue-gateway ARGS``, ``python /usr/local/bin/opencue-gateway ARGS``
    (how a console script's shebang runs), ``python -m gateway ARGS``.
    """
    for i, word in enumerate(cmdline):
        if Path(word).name == "opencue-gateway":
            return list(cmdline[i + 1:])
        if word == "-m" and i + 1 < len(cmdline) and cmdline[i + 1] == "gateway":
            return list(cmdline[i + 2:])
    return []


def process_args(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return gateway_args([w.decode(errors="replace") for w in raw.split(b"\0") if w])


def url_for(cfg: config.Config) -> str:
    """Where this gateway answers from inside its own host or container."""
    host = cfg.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":  # asyncio binds "::" IPv6-only
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if cfg.tls_cert_file is not None else "http"
    return f"{scheme}://{host}:{cfg.port}/healthz"


def check(args: Sequence[str], environ: Mapping[str, str]) -> tuple[bool, str]:
    """Whether the gateway these settings describe answers ``/healthz`` with 200."""
    try:
        cfg = config.load(list(args), environ)
    except (config.ConfigError, SystemExit) as e:
        return False, f"cannot read the gateway's settings: {e}"
    url = url_for(cfg)
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # our own process on loopback: liveness only
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT, context=context) as resp:
            status = resp.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        return False, f"{url}: {reason}"
    return status == 200, f"{url}: {status}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gateway.healthcheck",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--pid", type=int, default=1,
                    help="the gateway process whose flags to read (default 1, a container's)")
    opts = ap.parse_args(argv)
    ok, detail = check(process_args(opts.pid), os.environ)
    print(("healthy: " if ok else "unhealthy: ") + detail, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
