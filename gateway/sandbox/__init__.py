"""A Cuebot stand-in: OpenCue's real gRPC services over a SQLite farm.

The gateway's default backend in ``--sandbox`` mode and the backend of the
end-to-end tests. It serves the ``opencue-proto`` servicers with Cuebot's
semantics (see the reference notes restated in each servant's docstring)
and gRPC server reflection. The gateway core never imports this package.
"""
