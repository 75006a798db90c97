"""Frame logs: what a simulated render writes, where RQD would write it.

A job's ``log_dir`` is ``<log root>/<show>/<shot>/logs/<job>--<job id>`` (Cuebot's
layout, with the sandbox's log root in place of ``/shots``), and each run of a
frame writes ``<log_dir>/<job>.<frame>.rqlog``, the file CueWeb's and CueGUI's
log views open (a proc's ``log_path`` names it). The file has RQD's shape:

- a header when the render starts (``RenderQ JobSpec`` and the command,
  host, ids and environment, as ``name value`` lines between ``=`` rules);
- progress lines while it runs (a render that will fail stops writing half
  way, so a layer's LLU timeout can catch it);
- a footer when it ends (``RenderQ Job Complete``: exit status and signal,
  start and end times, max RSS, host; a kill message for a killed render).

A retried frame's earlier log is kept as ``.rqlog.1``, ``.rqlog.2``… (newest
first), as RQD rotates them.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("gateway.sandbox")

RULE = "=" * 59
KEEP = 9                           # rotated logs kept per frame


def command_for(command: str, number: int) -> str:
    """The command as RQD runs it for one frame (Cuebot's frame tokens filled in)."""
    return (command.replace("#ZFRAME#", f"{number:04d}").replace("#IFRAME#", str(number))
            .replace("#FRAME#", f"{number:04d}"))


class FrameLogs:
    """Writes the logs of one sandbox's renders under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()   # clients need absolute paths

    def job_dir(self, show: str, shot: str, job_name: str, job_id: str) -> str:
        return str(self.root / show / shot / "logs" / f"{job_name}--{job_id}")

    @staticmethod
    def path(log_dir: str, job_name: str, frame_name: str) -> Path:
        return Path(log_dir) / f"{job_name}.{frame_name}.rqlog"

    def _write(self, path: Path, text: str, mode: str = "a") -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, mode, encoding="utf-8") as f:
                f.write(text)
        except OSError as e:  # a full disk or a read-only root must not stop the farm
            log.warning("frame log %s: %s", path, e)

    @staticmethod
    def _rotate(path: Path) -> None:
        if not path.exists():
            return
        for n in range(KEEP, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            newer = path.with_name(f"{path.name}.{n - 1}") if n > 1 else path
            if newer.exists():
                os.replace(newer, older)

    def start(self, info: Any, host: str, cores: int, t: float) -> None:
        """The header, as RQD writes it when the render starts."""
        path = self.path(info["log_dir"], info["job_name"], info["frame_name"])
        try:
            self._rotate(path)
        except OSError as e:
            log.warning("frame log %s: %s", path, e)
        env = {"CUE3": "1", "CUE_CORES": str(max(cores // 100, 1)),
               "CUE_FRAME": info["frame_name"], "CUE_IFRAME": str(info["number"]),
               "CUE_JOB": info["job_name"], "CUE_LAYER": info["layer_name"],
               "CUE_LOG_PATH": info["log_dir"], "CUE_SHOT": info["shot"],
               "CUE_SHOW": info["show"], "CUE_THREADS": str(max(cores // 100, 1)),
               "CUE_USER": info["user"], "HOME": f"/home/{info['user']}"}
        lines = [RULE, f"RenderQ JobSpec      {time.ctime(t)}", "",
                 f"proxy                rqd.rqnetwork.RunningFrame/{info['frame_id']} -t:tcp "
                 f"-h {host} -p 10021"]
        for name, value in (("command", command_for(info["command"], info["number"])),
                            ("uid", info["uid"] if info["uid"] is not None else ""),
                            ("gid", 20), ("logDestination", str(path)),
                            ("cwd", f"/tmp/{info['job_name']}--{info['frame_name']}"),
                            ("renderHost", host), ("jobId", info["job_id"]),
                            ("frameId", info["frame_id"])):
            lines.append(f"{name:<21}{value}")
        lines += [f"{'env':<21}{k}={v}" for k, v in sorted(env.items())]
        lines += [RULE, f"[{time.strftime('%H:%M:%S', time.localtime(t))}] sandbox render of "
                        f"{info['frame_name']} on {host} ({cores / 100:.2f} cores)"]
        self._write(path, "\n".join(lines) + "\n")

    def progress(self, info: Any, percent: int, t: float) -> None:
        path = self.path(info["log_dir"], info["job_name"], info["frame_name"])
        self._write(path, f"[{time.strftime('%H:%M:%S', time.localtime(t))}] "
                          f"{info['layer_name']}: frame {info['number']} {percent}% done\n")

    def finish(self, info: Any, host: str, started: float, t: float, exit_status: int,
               signal: int = 0, rss: int = 0, kill_message: str = "") -> None:
        """The footer, as RQD writes it when the render ends."""
        path = self.path(info["log_dir"], info["job_name"], info["frame_name"])
        lines = ["", RULE, "RenderQ Job Complete", "",
                 f"{'exitStatus':<20}{exit_status}", f"{'exitSignal':<20}{signal}"]
        if kill_message:
            lines.append(f"{'killMessage':<20}{kill_message}")
        lines += [f"{'startTime':<20}{time.ctime(started)}", f"{'endTime':<20}{time.ctime(t)}",
                  f"{'maxrss':<20}{rss}", f"{'maxUsedGpuMemory':<20}0",
                  f"{'utime':<20}{max(0, int(t - started))}", f"{'stime':<20}0",
                  f"{'renderhost':<20}{host}", f"{'maxrss (KB)':<20}{rss}", RULE]
        self._write(path, "\n".join(lines) + "\n")


FRAME_INFO_SQL = (
    "SELECT f.id AS frame_id, f.name AS frame_name, f.number, l.name AS layer_name, "
    "l.command, j.id AS job_id, j.name AS job_name, j.log_dir, j.shot, j.user, j.uid, "
    "s.name AS show FROM frame f JOIN layer l ON l.id = f.layer_id JOIN job j ON "
    "j.id = f.job_id JOIN show s ON s.id = j.show_id WHERE f.id = ?")
