"""opencue-gateway: the HTTP/JSON front door of OpenCue's Cuebot."""

__version__ = "0.1.0"
