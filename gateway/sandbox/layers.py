"""job.LayerInterface, as Cuebot's ManageLayer answers it.

Lookups (GetLayer, FindLayer) are NOT_FOUND ``Incorrect result size:
expected 1, actual 0``; every other RPC names its layer by id and a missing
one is INTERNAL (Spring's EmptyResultDataAccessException). Values as Cuebot
stores them:

- SetMinCores: cores to units rounded to hundredths and truncated, below 10
  units one core; SetMaxCores: *whole* cores (2.5 reads back 2.0);
  SetMinMemory: at least 262144 KB; SetMinGpuMemory, SetMin/MaxGpus,
  SetTimeout, SetTimeoutLLU (minutes) and SetThreadable: stored as given;
- SetDispatchOrder: a layer's order must be positive (INTERNAL
  IllegalArgumentException otherwise);
- SetStartAfter: epoch seconds, 0 clears the gate; negative or more than
  five years ahead is INVALID_ARGUMENT (the one RPC that answers it), and the
  reason reads ``Set by <username>`` (``unknown`` when not given). The
  dispatcher books no frame of the layer before that time;
- AddLimit/DropLimit: by limit id; adding is idempotent (a MANUAL binding),
  an unknown id binds nothing; RegisterOutputPath appends a path once;
- MarkdoneFrames satisfies what waits on the *layer* (JOB/LAYER/FRAME_ON_
  LAYER), not on its frames; DropDepends satisfies what the layer depends
  on (LAYER_ON_JOB/LAYER/FRAME and FRAME_BY_FRAME) for the requested
  target; CreateFrameByFrameDependency ignores ``any_frame`` as Cuebot does;
- GetWhatDependsOnThis/GetWhatThisDependsOn list containers, not the
  frame-on-frame children of a FRAME_BY_FRAME depend.
"""
from __future__ import annotations

import time
from typing import Any

import grpc
from opencue_proto import job_pb2

from . import depends, ordering
from . import messages as M
from .common import by_id, cue_core_units, cue_frame_set, find_one, whole_core_units
from .criteria import find_frames
from .jobs import depend_on, depend_seq, target_clause
from .limits import limit_messages
from .servant import CueError, Reply, Servant, illegal, internal
from .store import Store, now

MEM_RESERVED_MIN = 262144          # KB: Cuebot's floor for a layer's memory
CORE_POINTS_RESERVED_MIN = 10      # units: below this a layer's min cores resets…
CORE_POINTS_RESERVED_DEFAULT = 100  # …to one core
START_AFTER_MAX_YEARS = 5
START_AFTER_REASON_MAX = 255


def layer_of(store: Store, msg: Any) -> Any:
    return by_id(store, "layer", msg.id)


class LayerServant(Servant):
    SERVICE = "job.LayerInterface"

    # -- reads -----------------------------------------------------------------
    def GetLayer(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT * FROM layer WHERE id = ?", (request.id,))
        return dict(layer=M.layers(self.store, [row])[0])

    def FindLayer(self, request: Any, context: Any) -> Reply:
        row = find_one(self.store, "SELECT l.* FROM layer l JOIN job j ON j.id = l.job_id "
                       "WHERE j.state = 'PENDING' AND j.name = ? AND l.name = ?",
                       (request.job, request.layer))
        return dict(layer=M.layers(self.store, [row])[0])

    def GetFrames(self, request: Any, context: Any) -> Reply:
        layer = layer_of(self.store, request.layer)
        rows = find_frames(self.store, "f.layer_id = ?", (layer["id"],), request.s)
        return dict(frames=job_pb2.FrameSeq(frames=M.frames(self.store, rows)))

    def GetOutputPaths(self, request: Any, context: Any) -> Reply:
        layer = layer_of(self.store, request.layer)
        return dict(output_paths=[p for p in layer["outputs"].split("\n") if p])

    def GetLimits(self, request: Any, context: Any) -> Reply:
        layer = layer_of(self.store, request.layer)
        rows = self.store.all("SELECT l.* FROM limit_record l JOIN layer_limit ll ON "
                              "ll.limit_id = l.id WHERE ll.layer_id = ? ORDER BY l.name",
                              (layer["id"],))
        return dict(limits=limit_messages(self.store, rows))

    def GetWhatDependsOnThis(self, request: Any, context: Any) -> Reply:
        layer = layer_of(self.store, request.layer)
        return dict(depends=depend_seq(self.store, "parent_id IS NULL AND on_layer_id = ?",
                                       (layer["id"],)))

    def GetWhatThisDependsOn(self, request: Any, context: Any) -> Reply:
        layer = layer_of(self.store, request.layer)
        return dict(depends=depend_seq(self.store, "parent_id IS NULL AND er_layer_id = ?",
                                       (layer["id"],)))

    # -- frames ------------------------------------------------------------------
    def _each_frame(self, request: Any, action: Any) -> None:
        with self.store.tx():
            layer = layer_of(self.store, request.layer)
            for f in self.store.all("SELECT id FROM frame WHERE layer_id = ? ORDER BY "
                                    "dispatch_order", (layer["id"],)):
                action(f["id"])

    def KillFrames(self, request: Any, context: Any) -> Reply:
        self._each_frame(request, self.farm.kill_frame)
        return None

    def EatFrames(self, request: Any, context: Any) -> Reply:
        self._each_frame(request, self.farm.eat_frame)
        return None

    def RetryFrames(self, request: Any, context: Any) -> Reply:
        self._each_frame(request, self.farm.retry_frame)
        return None

    def MarkdoneFrames(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            layer = layer_of(self.store, request.layer)
            for dep in self.farm.what_depends_on_layer(layer["id"]):
                self.farm.satisfy(dep["id"])
        return None

    def ReorderFrames(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            layer = layer_of(self.store, request.layer)
            ordering.reorder_layer(self.store, layer, cue_frame_set(request.range),
                                   job_pb2.Order.Name(request.order))
        return None

    def StaggerFrames(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            layer = layer_of(self.store, request.layer)
            ordering.stagger_layer(self.store, layer, request.range, request.stagger)
        return None

    # -- settings ----------------------------------------------------------------
    def _set(self, request: Any, column: str, value: Any, **more: Any) -> None:
        values = {column: value, **more}
        with self.store.tx():
            layer = layer_of(self.store, request.layer)
            sets = ", ".join(f"{c} = ?" for c in values)
            self.store.run(f"UPDATE layer SET {sets} WHERE id = ?", (*values.values(),
                                                                     layer["id"]))

    def SetTags(self, request: Any, context: Any) -> Reply:
        tags = list(dict.fromkeys(request.tags))
        if not tags:
            raise illegal("Layers must have at least one tag.")
        kept = [t for t in tags if t]
        if not kept:  # Cuebot trims a separator that was never added
            raise internal("java.lang.StringIndexOutOfBoundsException",
                           "start -3, end 0, length 0")
        self._set(request, "tags", M.join_tags(kept))
        return None

    def SetMinCores(self, request: Any, context: Any) -> Reply:
        units = cue_core_units(request.cores)
        if units < CORE_POINTS_RESERVED_MIN:
            units = CORE_POINTS_RESERVED_DEFAULT
        self._set(request, "min_cores", units)
        return None

    def SetMaxCores(self, request: Any, context: Any) -> Reply:
        self._set(request, "max_cores", whole_core_units(request.cores))
        return None

    def SetMinMemory(self, request: Any, context: Any) -> Reply:
        self._set(request, "min_memory", max(request.memory, MEM_RESERVED_MIN))
        return None

    def SetMinGpuMemory(self, request: Any, context: Any) -> Reply:
        self._set(request, "min_gpu_memory", request.gpu_memory)
        return None

    def SetMinGpus(self, request: Any, context: Any) -> Reply:
        self._set(request, "min_gpus", request.min_gpus)
        return None

    def SetMaxGpus(self, request: Any, context: Any) -> Reply:
        self._set(request, "max_gpus", request.max_gpus)
        return None

    def SetThreadable(self, request: Any, context: Any) -> Reply:
        self._set(request, "threadable", int(request.threadable))
        return None

    def SetTimeout(self, request: Any, context: Any) -> Reply:
        self._set(request, "timeout", request.timeout)
        return None

    def SetTimeoutLLU(self, request: Any, context: Any) -> Reply:
        self._set(request, "timeout_llu", request.timeout_llu)
        return None

    def EnableMemoryOptimizer(self, request: Any, context: Any) -> Reply:
        self._set(request, "memory_optimizer_enabled", int(request.value))
        return None

    def SetDispatchOrder(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            layer = layer_of(self.store, request.layer)
            if request.order <= 0:
                raise illegal("Layer dispatch order must be positive.")
            self.store.run("UPDATE layer SET dispatch_order = ? WHERE id = ?",
                           (request.order, layer["id"]))
        return None

    def SetStartAfter(self, request: Any, context: Any) -> Reply:
        value = request.start_after
        ceiling = int(time.time()) + START_AFTER_MAX_YEARS * 365 * 24 * 3600
        if value < 0 or value > ceiling:
            raise CueError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"start_after must be a Unix timestamp in seconds no more than "
                           f"{START_AFTER_MAX_YEARS} years in the future, or 0 to clear the "
                           f"gate; got {value}. Was a milliseconds value passed where seconds "
                           f"are expected?")
        if value == 0:
            self._set(request, "start_after", 0, start_after_reason="")
        else:
            reason = f"Set by {request.username or 'unknown'}"[:START_AFTER_REASON_MAX]
            self._set(request, "start_after", value, start_after_reason=reason)
        return None

    def AddLimit(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            layer = layer_of(self.store, request.layer)
            if self.store.one("SELECT 1 FROM limit_record WHERE id = ?", (request.limit_id,)):
                self.store.run("INSERT OR IGNORE INTO layer_limit (layer_id, limit_id, source, "
                               "created) VALUES (?, ?, 'MANUAL', ?)",
                               (layer["id"], request.limit_id, now()))
        return None

    def DropLimit(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            layer = layer_of(self.store, request.layer)
            self.store.run("DELETE FROM layer_limit WHERE layer_id = ? AND limit_id = ?",
                           (layer["id"], request.limit_id))
        return None

    def RegisterOutputPath(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            layer = layer_of(self.store, request.layer)
            paths = [p for p in layer["outputs"].split("\n") if p]
            if request.spec not in paths:
                paths.append(request.spec)
            self.store.run("UPDATE layer SET outputs = ? WHERE id = ?",
                           ("\n".join(paths), layer["id"]))
        return None

    # -- depends -----------------------------------------------------------------
    def _depend(self, request: Any, kind: str, table: str, key: str) -> Reply:
        with self.store.tx():
            layer = layer_of(self.store, request.layer)
            return depend_on(self.farm, self.store, kind,
                             depends.Side(layer["job_id"], layer["id"]), table, key)

    def CreateDependencyOnJob(self, request: Any, context: Any) -> Reply:
        return self._depend(request, "LAYER_ON_JOB", "job", request.job.id)

    def CreateDependencyOnLayer(self, request: Any, context: Any) -> Reply:
        return self._depend(request, "LAYER_ON_LAYER", "layer", request.depend_on_layer.id)

    def CreateDependencyOnFrame(self, request: Any, context: Any) -> Reply:
        return self._depend(request, "LAYER_ON_FRAME", "frame", request.frame.id)

    def CreateFrameByFrameDependency(self, request: Any, context: Any) -> Reply:
        return self._depend(request, "FRAME_BY_FRAME", "layer", request.depend_layer.id)

    def DropDepends(self, request: Any, context: Any) -> Reply:
        with self.store.tx():
            layer = layer_of(self.store, request.layer)
            for dep in self.store.all(
                    f"SELECT id FROM depend WHERE er_layer_id = ? AND active = 1 AND parent_id "
                    f"IS NULL AND type IN ('LAYER_ON_JOB', 'LAYER_ON_LAYER', 'LAYER_ON_FRAME', "
                    f"'FRAME_BY_FRAME'){target_clause(request.target)} ORDER BY seq",
                    (layer["id"],)):
                self.farm.satisfy(dep["id"])
        return None

    # -- local booking -------------------------------------------------------------
    def AddRenderPartition(self, request: Any, context: Any) -> Reply:
        from .partitions import add_render_partition

        with self.store.tx():
            layer = layer_of(self.store, request.layer)
        return add_render_partition(self.farm, request, "LAYER_PARTITION",
                                    job_id=layer["job_id"], layer_id=layer["id"])


SERVANTS = [LayerServant]
