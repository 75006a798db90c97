"""``opencue-gateway``: read settings, load descriptors, serve until told to stop.

Start-up failures (bad setting, missing descriptors, port taken) end the
process with one line on stderr and a non-zero exit code, never a traceback:
exit 2 for a bad setting, 1 for anything else (130 if interrupted before it is up).

The settings are read before the modules that serve are imported, so that
``optional.leave_out`` can keep out the libraries they do not use.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

from . import config as config_mod
from . import logs, loops, optional, shutdown
from .config import ConfigError

log = logging.getLogger("gateway")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = config_mod.load(argv, os.environ)
    except ConfigError as e:
        print(f"opencue-gateway: error: {e}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level, cfg.log_format, access_flush=cfg.access_log_flush)
    shutdown.enable_watchdog()
    optional.leave_out(cfg)
    from .startup import StartupError

    try:
        if cfg.workers > 1:
            from . import workers

            return workers.run(cfg)
        from . import serving

        loops.run(serving.serve(cfg), cfg.event_loop)
    except (StartupError, loops.LoopUnavailable) as e:
        print(f"opencue-gateway: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C before serve() installed its own handler (e.g. during a slow
        # --reflection fetch): asyncio.run re-raises it; say so, no traceback.
        print("opencue-gateway: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: one line, details on request
        log.debug("unexpected failure", exc_info=True)
        print(f"opencue-gateway: error: unexpected {type(e).__name__}: {e} "
              "(LOG_LEVEL=debug shows where)", file=sys.stderr)
        return 1
    return 0
