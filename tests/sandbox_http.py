"""A client of the gateway in front of a sandbox, for tests that act as CueWeb would.

``Cue.rpc`` posts JSON to ``/<pkg.Service>/<Method>`` and checks the HTTP
status; the helpers read jobs, layers and frames back through the same
gateway, so every effect a test asserts is one a client would see.
"""
from __future__ import annotations

from typing import Any

import orjson

DOCTYPE = ('<?xml version="1.0"?><!DOCTYPE spec PUBLIC "SPI Cue  Specification Language" '
           '"http://localhost:8080/spcue/dtd/cjsl-1.15.dtd">')
GB = 1024 * 1024                    # KB
NO_ROW = "Incorrect result size: expected 1, actual 0"
EMPTY_RESULT = ("org.springframework.dao.EmptyResultDataAccessException: " + NO_ROW + "\n"
                + NO_ROW)


def layer(name: str = "render", frames: str = "1-10", *, chunk: int = 1, cores: str = "1.0",
          memory: str = "1g", extra: str = "", threadable: bool | None = None) -> str:
    """A Render layer; a layer of more than one core is threadable unless told (Cuebot books
    a layer that is not on one core, whatever it asks for)."""
    if threadable is None:
        threadable = float(cores) > 1
    thread = "<threadable>true</threadable>" if threadable else ""
    return (f'<layer name="{name}" type="Render"><cmd>render -f #IFRAME#</cmd>'
            f"<range>{frames}</range><chunk>{chunk}</chunk><cores>{cores}</cores>{thread}"
            f"<memory>{memory}</memory>{extra}</layer>")


def spec(name: str = "demo", *layers: str, shot: str = "sh010", facility: str = "local",
         options: str = "") -> str:
    body = (f'<job name="{name}">{options}<layers>{"".join(layers or (layer(),))}</layers>'
            f"</job>")
    head = f"<facility>{facility}</facility>" if facility else ""
    return (DOCTYPE + f"<spec>{head}<show>testing</show><shot>{shot}</shot><user>jdoe</user>"
            + body + "</spec>")


class Cue:
    def __init__(self, gw: Any, sandbox: Any) -> None:
        self.gw = gw
        self.sandbox = sandbox
        self.store = sandbox.store

    async def rpc(self, path: str, body: dict[str, Any] | None = None, *,
                  status: int = 200) -> Any:
        resp = await self.gw.post(path, data=orjson.dumps(body or {}))
        data = orjson.loads(await resp.read())
        assert resp.status == status, (path, resp.status, data)
        return data

    async def error(self, path: str, body: dict[str, Any], status: int) -> str:
        """The message of a failed call (its HTTP status checked)."""
        return (await self.rpc(path, body, status=status))["message"]

    # -- jobs ------------------------------------------------------------------
    async def launch(self, text: str) -> dict[str, Any]:
        got = await self.rpc("/job.JobInterface/LaunchSpecAndWait", {"spec": text})
        return got["jobs"]["jobs"][0]

    async def job(self, job: dict[str, Any] | str) -> dict[str, Any]:
        job_id = job if isinstance(job, str) else job["id"]
        return (await self.rpc("/job.JobInterface/GetJob", {"id": job_id}))["job"]

    async def find_job(self, name: str) -> dict[str, Any]:
        return (await self.rpc("/job.JobInterface/FindJob", {"name": name}))["job"]

    async def layers(self, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
        got = await self.rpc("/job.JobInterface/GetLayers", {"job": {"id": job["id"]}})
        return {x["name"]: x for x in got["layers"]["layers"]}

    async def layer(self, job: dict[str, Any], name: str) -> dict[str, Any]:
        return (await self.layers(job))[name]

    async def frames(self, job: dict[str, Any], **req: Any) -> dict[str, dict[str, Any]]:
        got = await self.rpc("/job.JobInterface/GetFrames",
                             {"job": {"id": job["id"]}, "req": {"page": 1, "limit": 1000, **req}})
        return {f["name"]: f for f in got["frames"]["frames"]}

    async def frame(self, job: dict[str, Any], name: str) -> dict[str, Any]:
        return (await self.frames(job))[name]

    async def states(self, job: dict[str, Any]) -> dict[str, str]:
        return {n: f["state"] for n, f in (await self.frames(job)).items()}

    async def orders(self, job: dict[str, Any], layer_name: str) -> list[int]:
        """The layer's frame numbers in dispatch order."""
        frames = [f for f in (await self.frames(job)).values() if f["layerName"] == layer_name]
        return [f["number"] for f in sorted(frames, key=lambda f: (f["dispatchOrder"],
                                                                    f["number"]))]

    # -- the rest ------------------------------------------------------------------
    async def host(self, name: str) -> dict[str, Any]:
        return (await self.rpc("/host.HostInterface/FindHost", {"name": name}))["host"]

    async def procs(self, **criteria: Any) -> list[dict[str, Any]]:
        return (await self.rpc("/host.ProcInterface/GetProcs", {"r": criteria}))["procs"]["procs"]

    async def group(self, group_id: str) -> dict[str, Any]:
        return (await self.rpc("/job.GroupInterface/GetGroup", {"id": group_id}))["group"]

    async def root_group(self) -> dict[str, Any]:
        return (await self.rpc("/show.ShowInterface/GetRootGroup",
                               {"show": {"name": "testing"}}))["group"]

    async def limit(self, name: str) -> dict[str, Any]:
        return (await self.rpc("/limit.LimitInterface/Find", {"name": name}))["limit"]

    def step(self, t: float) -> Any:
        return self.sandbox.dispatcher.step(t)
