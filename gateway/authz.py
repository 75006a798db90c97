"""Who may do what: the roles of a token against a policy of RPC patterns per role.

``AUTHZ_POLICY`` is a TOML file::

    [roles]
    viewer   = ["*/Get*", "*/Find*", "*/Is*"]
    wrangler = ["job.*/*", "host.HostInterface/Lock", "host.HostInterface/Unlock"]
    admin    = ["*"]

A pattern (``fnmatch``: ``*``, ``?``, ``[...]``) is matched against the
canonical ``package.Service/Method`` of the RPC, never against the path as
spelt: the method table resolves an alias spelling (``/frame.FrameInterface/Kill``)
to the real method first. A caller is allowed when any of its roles has a
pattern that matches; the patterns are compiled once per policy load and
each method's answer is remembered, so a request costs a dict lookup.

Every route declares what it calls (``declare``): an RPC route the method
it names; an ``/api`` operation every RPC it may call (``DELETE
/api/job/{id}`` needs ``job.JobInterface/GetJob`` and ``job.JobInterface/Kill``);
``POST /admin/reload`` the pseudo-method ``gateway.Admin/Reload``. The check
runs in the guard after authentication and before the rate limiter spends,
so nothing reaches Cuebot and nothing is spent for a denied call; ``invoke``
checks again any call a route did not declare. A route that declares
nothing is refused to every role (fail closed).

A refusal is 403 with code 7 (PERMISSION_DENIED) naming the method and the
caller's roles; it is counted (``authz_denials_total``), logged, and
written to the audit log. Without ``AUTHZ_POLICY`` every call is allowed,
as before; ``Access`` then only feeds the audit log.
"""
from __future__ import annotations

import inspect
import logging
import re
import time
import tomllib
from dataclasses import dataclass, field
from fnmatch import translate
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Union

import orjson
from aiohttp import web

from . import errors
from .audit import STATUS_OF, AuditLog, Record, Target
from .errors import GatewayError
from .routes import MethodTable, Route

if TYPE_CHECKING:
    from .auth import Identity
    from .metrics import Metrics

log = logging.getLogger("gateway.authz")

ADMIN_RELOAD = "gateway.Admin/Reload"
_MEMO_LIMIT = 4096


class PolicyError(Exception):
    """The policy file cannot be used; the message says where and why, in one line."""


# ---------------------------------------------------------------------------
# the policy
# ---------------------------------------------------------------------------
class Policy:
    """Roles and their patterns, compiled."""

    def __init__(self, roles: Mapping[str, tuple[str, ...]], source: str = "<policy>") -> None:
        self.source = source
        self.roles = dict(roles)
        self._regex = {role: re.compile("|".join(translate(p) for p in patterns))
                       for role, patterns in self.roles.items() if patterns}
        self._memo: dict[str, frozenset[str]] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and other.roles == self.roles

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def read(cls, path: Path) -> "Policy":
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise PolicyError(f"AUTHZ_POLICY {path}: {e.strerror or e}") from None
        return cls.parse(raw, str(path))

    @classmethod
    def parse(cls, raw: bytes | str, source: str = "<policy>") -> "Policy":
        where = f"AUTHZ_POLICY {source}"
        try:
            text = raw.decode() if isinstance(raw, bytes) else raw
            doc = tomllib.loads(text)
        except UnicodeDecodeError:
            raise PolicyError(f"{where}: not UTF-8 text") from None
        except tomllib.TOMLDecodeError as e:
            raise PolicyError(f"{where}: not valid TOML: {e}") from None
        unknown = sorted(set(doc) - {"roles"})
        if unknown:
            raise PolicyError(f"{where}: unknown key {unknown[0]!r}; the file holds one "
                              "[roles] table (role = [\"package.Service/Method\", ...])")
        table = doc.get("roles")
        if not isinstance(table, dict) or not table:
            raise PolicyError(f"{where}: no [roles] table, or it names no role")
        roles: dict[str, tuple[str, ...]] = {}
        for role, patterns in table.items():
            if not role or any(c.isspace() for c in role):
                raise PolicyError(f"{where}: role {role!r}: a role name has no spaces")
            if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise PolicyError(f"{where}: role {role!r}: expected a list of patterns such "
                                  "as [\"job.*/*\", \"*/Get*\"]")
            checked = []
            for p in patterns:
                p = p.strip().lstrip("/")
                if p != "*" and p.count("/") != 1:
                    raise PolicyError(
                        f"{where}: role {role!r}: pattern {p!r} does not look like "
                        "package.Service/Method (e.g. 'job.JobInterface/Kill', 'job.*/*', "
                        "'*/Get*', or '*' for everything)")
                checked.append(p)
            roles[role] = tuple(checked)
        return cls(roles, source)

    def roles_allowing(self, method: str) -> frozenset[str]:
        """The roles that may call ``method`` (``package.Service/Method``)."""
        allowed = self._memo.get(method)
        if allowed is None:
            allowed = frozenset(r for r, rx in self._regex.items() if rx.match(method))
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[method] = allowed
        return allowed

    def allows(self, method: str, roles: tuple[str, ...]) -> bool:
        return not self.roles_allowing(method).isdisjoint(roles)

    def unmatched(self, methods: list[str]) -> list[tuple[str, str]]:
        """(role, pattern) pairs that match none of ``methods``: a typo, or an alias spelling."""
        out = []
        for role, patterns in self.roles.items():
            for p in patterns:
                rx = re.compile(translate(p))
                if not any(rx.match(m) for m in methods):
                    out.append((role, p))
        return out


def describe_roles(roles: tuple[str, ...]) -> str:
    if not roles:
        return "a caller without roles"
    shown = ", ".join(roles[:10]) + (f" and {len(roles) - 10} more" if len(roles) > 10 else "")
    return f"role{'s' if len(roles) > 1 else ''} {shown}"


def denied(method: str, roles: tuple[str, ...]) -> GatewayError:
    return GatewayError(
        403, errors.PERMISSION_DENIED,
        f"permission denied: {method} is not allowed for {describe_roles(roles)}",
        headers={"WWW-Authenticate":
                 'Bearer realm="opencue-gateway", error="insufficient_scope"'})


# ---------------------------------------------------------------------------
# what each route calls
# ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Need:
    """The RPCs a request will call, and where a denial finds its targets."""

    methods: tuple[str, ...]                   # package.Service/Method
    params: Mapping[str, str] | None = None    # path parameters (job_id...), if not match_info


# A rule gives a request's Need: a Route (an RPC route: its one method), a
# Need, or None (nothing to authorize: the handler answers 404/405 itself).
Rule = Callable[[web.Request], Union[Route, Need, None, Awaitable[Union[Route, Need, None]]]]
RULES = web.AppKey("authz_rules", dict)


def declare(app: web.Application, resource: web.AbstractResource, rule: Rule) -> None:
    """Say what ``resource``'s requests call; a resource that says nothing is refused."""
    app.setdefault(RULES, {})[resource] = rule


def per_method(needs: Mapping[str, tuple[str, ...]]) -> Rule:
    """A rule for a route whose calls depend only on the HTTP method (HEAD as GET)."""
    table = {verb: Need(methods) for verb, methods in needs.items()}
    if "GET" in table:
        table.setdefault("HEAD", table["GET"])
    return lambda request: table.get(request.method)


# ---------------------------------------------------------------------------
# the request path
# ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Caller:
    request_id: str
    user: str | None
    roles: tuple[str, ...]
    client: str
    started: float = field(default_factory=time.perf_counter)


CALLER = web.RequestKey("caller", Caller) if hasattr(web, "RequestKey") else "caller"
# the methods the guard allowed for this request; invoke checks any other
ALLOWED = web.RequestKey("allowed", tuple) if hasattr(web, "RequestKey") else "allowed"


class Access:
    """Authorization (``AUTHZ_POLICY``) and its record (``AUDIT_LOG``) for one app."""

    def __init__(self, policy: Policy | None, audit: AuditLog | None,
                 default_roles: tuple[str, ...] = (),
                 metrics: "Metrics | None" = None) -> None:
        self.policy = policy
        self.audit = audit
        self.default_roles = default_roles
        self.metrics = metrics

    # -- the guard ---------------------------------------------------------
    async def admit(self, request: web.Request, identity: "Identity | None", request_id: str,
                    client: str) -> None:
        """Remember who calls; refuse with 403 a call the policy does not allow."""
        if identity is not None:
            caller = Caller(request_id, identity.subject, identity.roles, client)
        else:  # --no-auth: nobody in particular
            caller = Caller(request_id, None, self.default_roles, client)
        request[CALLER] = caller
        policy = self.policy
        if policy is None:
            return
        resource = getattr(request.match_info.route, "resource", None)
        if resource is None:
            return  # no route at all: the router's own 404/405
        rule = request.app.get(RULES, {}).get(resource)
        if rule is None:
            log.error("no authorization rule for %s (a route added without authz.declare); "
                      "refused", resource.canonical)
            self._count(resource.canonical)
            raise GatewayError(403, errors.PERMISSION_DENIED,
                               "permission denied: this route has no authorization rule")
        need = rule(request)
        if inspect.isawaitable(need):
            need = await need
        if need is None:
            return
        if isinstance(need, Route):
            method = need.path[1:]
            if not policy.allows(method, caller.roles):
                await self._deny(request, caller, method, route=need)
            request[ALLOWED] = (method,)
            return
        for method in need.methods:
            if not policy.allows(method, caller.roles):
                await self._deny(request, caller, method, params=need.params)
        request[ALLOWED] = need.methods

    # -- invoke ------------------------------------------------------------
    def before_call(self, request: web.Request, route: Route, data: bytes) -> None:
        """A call its route did not declare is checked here: no way to Cuebot around it."""
        policy = self.policy
        if policy is None:
            return
        method = route.path[1:]
        allowed = request.get(ALLOWED)
        if allowed is not None and method in allowed:
            return
        caller = self._caller(request)
        if not policy.allows(method, caller.roles):
            targets = (self.audit.targets.of_wire(route.request.cls, data, route.service)
                       if self.audit is not None else [])
            raise self._refuse(request, caller, method, targets)

    def after_call(self, request: web.Request, route: Route, data: bytes, code: str,
                   seconds: float) -> None:
        """The audit line of a call, once Cuebot has answered (or the call was cut)."""
        audit = self.audit
        if audit is None:
            return
        method = route.path[1:]
        if not audit.wants(method):
            return
        caller = self._caller(request)
        audit.write(Record(
            event="call", request_id=caller.request_id, user=caller.user, roles=caller.roles,
            client=caller.client, method=method, path=request.path,
            targets=audit.targets.of_wire(route.request.cls, data, route.service),
            status=STATUS_OF.get(code, 500), grpc_code=code,
            duration_ms=seconds * 1000))

    # -- refusals ------------------------------------------------------------
    async def _deny(self, request: web.Request, caller: Caller, method: str, *,
                    route: Route | None = None,
                    params: Mapping[str, str] | None = None) -> None:
        targets: list[Target] = []
        if self.audit is not None:
            if route is not None:
                targets = await self._body_targets(request, route)
            else:
                targets = _param_targets(params if params is not None
                                         else request.match_info)
        raise self._refuse(request, caller, method, targets)

    def _refuse(self, request: web.Request, caller: Caller, method: str,
                targets: list[Target]) -> GatewayError:
        self._count(method)
        log.info("denied %s to %s (%s; request %s, client %s)", method,
                 _quoted(caller.user), describe_roles(tuple(_quoted(r) for r in caller.roles)),
                 caller.request_id, _quoted(caller.client))
        if self.audit is not None:
            self.audit.write(Record(
                event="denied", request_id=caller.request_id, user=caller.user,
                roles=caller.roles, client=caller.client, method=method, path=request.path,
                targets=targets, status=403, grpc_code="PERMISSION_DENIED",
                duration_ms=(time.perf_counter() - caller.started) * 1000))
        return denied(method, caller.roles)

    async def _body_targets(self, request: web.Request, route: Route) -> list[Target]:
        """What a refused RPC call would have acted on, from its body; [] if unreadable."""
        assert self.audit is not None
        try:
            body = await request.read()
            data = route.request.from_json(body)
        except Exception:  # noqa: BLE001 - a refused request's body is a courtesy to the audit
            return []
        return self.audit.targets.of_wire(route.request.cls, data, route.service)

    def _count(self, method: str) -> None:
        if self.metrics is not None:
            self.metrics.authz_denial(method)

    def _caller(self, request: web.Request) -> Caller:
        caller = request.get(CALLER)
        if caller is None:  # a backend call from outside the guard: nobody's
            caller = Caller("-", None, self.default_roles, request.remote or "unknown")
        return caller

    # -- reload and shutdown ---------------------------------------------------
    def replace_policy(self, policy: Policy | None) -> bool:
        """Serve ``policy`` from now on; False if it equals the one serving (kept, warm)."""
        if policy == self.policy:
            return False
        self.policy = policy
        return True

    def warn_unmatched(self, table: MethodTable) -> None:
        """One warning per pattern that matches no method served (a typo, an alias)."""
        if self.policy is None:
            return
        methods = [p[1:] for p in table.routes] + [ADMIN_RELOAD]
        for role, pattern in self.policy.unmatched(methods):
            log.warning("AUTHZ_POLICY %s: role %s: pattern %r matches no method served "
                        "(patterns match package.Service/Method as the descriptors name it, "
                        "e.g. job.FrameInterface/Kill, not the alias frame.FrameInterface)",
                        self.policy.source, role, pattern)

    def reopen(self) -> None:
        if self.audit is not None:
            self.audit.reopen()

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()


def _param_targets(params: Mapping[str, str]) -> list[Target]:
    """``/api`` path parameters: ``job_id`` -> a job's id (``show_id``: its id or name)."""
    return [{"kind": k[:-3], "id": v} for k, v in params.items() if k.endswith("_id") and v]


def _quoted(value: str | None) -> str:
    """A client-chosen value for a log line: JSON-quoted when it could break the line."""
    if value is None:
        return "-"
    if value.isprintable() and " " not in value and '"' not in value:
        return value
    return orjson.dumps(value).decode()


def read_policy(path: Path | None) -> Policy | None:
    return Policy.read(path) if path is not None else None


def from_config(cfg: Any, metrics: "Metrics | None" = None) -> Access | None:
    """The Access the settings ask for; None with neither AUTHZ_POLICY nor AUDIT_LOG.

    PolicyError or audit.AuditError when a file cannot be used.
    """
    policy = read_policy(cfg.authz_policy)
    audit = AuditLog(cfg.audit_log, cfg.audit_methods) if cfg.audit_log else None
    if policy is None and audit is None:
        return None
    if audit is not None and metrics is not None:
        audit.on_failure = metrics.audit_failure
    return Access(policy, audit, cfg.authz_default_role, metrics)
