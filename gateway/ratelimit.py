"""Token-bucket limits per client, in this process or shared through Redis.

Each client has a bucket holding up to ``burst`` tokens that refills at
``rate`` tokens a second; a request spends its cost (1, or what
``RATE_LIMIT_COSTS`` says for its method) or is refused with 429 before it
reaches Cuebot. In one process the buckets are aiolimiter's leaky buckets (a
leaky bucket of capacity ``burst`` draining at ``rate`` admits exactly what
the token bucket does). With ``RATE_LIMIT_REDIS_URL`` every replica and
worker spends from the same bucket, kept in Redis and updated by one Lua
script per check, timed by Redis's own clock so that replicas whose clocks
differ still agree.

If Redis cannot be reached, ``RATE_LIMIT_FAIL=open`` (the default) keeps
serving, limited by this process's own buckets, and says so in the log and a
counter; ``closed`` refuses with 503 until Redis answers again.
"""
from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Callable, Iterable, NamedTuple, Sequence

from aiolimiter import AsyncLimiter

from . import errors
from .errors import GatewayError

log = logging.getLogger("gateway.ratelimit")

# Idle buckets are full again after burst/rate seconds and then equal a new
# one, so they are dropped; this caps the rest (clients active right now).
MAX_LOCAL_CLIENTS = 100_000
REDIS_TIMEOUT = 0.25      # seconds per Redis call before it counts as down
REDIS_RETRY_AFTER = 1.0   # after a failure, seconds before Redis is tried again
_WARN_EVERY = 30.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Decision(NamedTuple):
    """One check's outcome (a tuple: one is made per request)."""

    allowed: bool
    limit: float          # tokens per second (X-RateLimit-Limit)
    remaining: float      # tokens left after this request
    reset: float          # epoch seconds at which the bucket is full again
    retry_after: float    # seconds until the refused request would fit (0 if allowed)

    def headers(self) -> dict[str, str]:
        h: dict[str, str] = {}
        add_headers(self, h)
        return h


def add_headers(d: Decision, into: dict[str, str]) -> None:
    """``d`` as X-RateLimit-* (and Retry-After when refused) headers, added to ``into``."""
    _bucket_headers(into, _number(d.limit), d.remaining, d.reset)
    if not d.allowed:
        into["Retry-After"] = str(max(1, math.ceil(d.retry_after)))


def _bucket_headers(into: dict[str, str], limit: str, remaining: float, reset: float) -> None:
    into["X-RateLimit-Limit"] = limit
    into["X-RateLimit-Remaining"] = str(math.floor(remaining)) if remaining > 0 else "0"
    into["X-RateLimit-Reset"] = str(math.ceil(reset))


@lru_cache(maxsize=64)
def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _decision(allowed: bool, rate: float, burst: float, tokens: float, cost: float,
              now: float) -> Decision:
    return Decision(allowed, rate, tokens, now + (burst - tokens) / rate,
                    0.0 if allowed else (cost - tokens) / rate)


class LocalBuckets:
    """This process's buckets, least recently used first.

    Each is an aiolimiter ``AsyncLimiter`` of capacity ``burst`` draining at
    ``rate``; its ``_last_check`` (the loop time it last drained) says how long
    it has been idle.
    """

    def __init__(self, rate: float, burst: float, max_clients: int = MAX_LOCAL_CLIENTS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._idle = burst / rate  # an untouched bucket is full after this long
        self._buckets: OrderedDict[str, AsyncLimiter] = OrderedDict()
        self._limit_text = _number(rate)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str, cost: float) -> Decision:
        limiter = self._limiter(client)
        return self._decision(limiter, self._fits(limiter, cost), cost)

    def spend(self, client: str, cost: float, headers: dict[str, str]) -> Decision | None:
        """``take``, its headers added to ``headers``: None if allowed, else the refusal.

        The request path's form: no decision object for the usual outcome.
        """
        limiter = self._limiter(client)
        if self._fits(limiter, cost):
            level = limiter._level  # noqa: SLF001
            _bucket_headers(headers, self._limit_text, self.burst - level,
                            time.time() + level / self.rate)
            return None
        d = self._decision(limiter, False, cost)
        add_headers(d, headers)
        return d

    def _decision(self, limiter: AsyncLimiter, allowed: bool, cost: float) -> Decision:
        return _decision(allowed, self.rate, self.burst, self.burst - limiter._level,  # noqa: SLF001
                         cost, time.time())

    @staticmethod
    def _fits(limiter: AsyncLimiter, cost: float) -> bool:
        """Whether ``cost`` fits in the bucket; if so, it is spent.

        has_capacity() brings aiolimiter's level (tokens spent, kept to itself)
        up to date; when it holds, acquire() would only add the cost to it:
        done here, without a coroutine per request.
        """
        if limiter.has_capacity(cost):
            limiter._level += cost  # noqa: SLF001
            return True
        return False

    def _limiter(self, client: str) -> AsyncLimiter:
        """``client``'s bucket, made (full) if it has none, now the most recently used."""
        buckets = self._buckets
        limiter = buckets.get(client)
        if limiter is not None:
            buckets.move_to_end(client)
            return limiter
        self._evict()
        limiter = buckets[client] = AsyncLimiter(self.burst, self._idle)
        return limiter

    def _evict(self) -> None:
        """Drop buckets idle long enough to be full again, and the oldest past max_clients."""
        buckets = self._buckets
        if not buckets:
            return
        now = asyncio.get_running_loop().time()  # aiolimiter's clock
        while buckets:
            oldest = next(iter(buckets.values()))
            if now - oldest._last_check < self._idle \
                    and len(buckets) < self.max_clients:  # noqa: SLF001
                break
            buckets.popitem(last=False)


# One check, atomically: refill by elapsed time (Redis's clock), spend if it
# fits, store, and let an idle bucket expire once it would be full anyway.
_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'ts', 'tokens')
local tokens = burst
if state[1] then
  tokens = tonumber(state[2])
  local elapsed = now - tonumber(state[1])
  if elapsed > 0 then tokens = math.min(burst, tokens + elapsed * rate) end
end
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'ts', string.format('%.6f', now), 'tokens', string.format('%.6f', tokens))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, string.format('%.6f', tokens), string.format('%.6f', now)}
"""


class RedisBuckets:
    """Buckets in Redis, shared by every gateway process that uses the same URL."""

    def __init__(self, url: str, rate: float, burst: float,
                 prefix: str = "opencue-gateway:ratelimit:") -> None:
        import redis.asyncio as aioredis  # only when configured

        self.rate = rate
        self.burst = burst
        self.prefix = prefix
        self._redis = aioredis.from_url(url, socket_timeout=REDIS_TIMEOUT,
                                        socket_connect_timeout=REDIS_TIMEOUT,
                                        retry_on_timeout=False)
        self._script = self._redis.register_script(_SCRIPT)

    def key(self, client: str) -> str:
        # client ids come from tokens and headers: hashed to a fixed, safe length
        return self.prefix + hashlib.blake2b(client.encode(), digest_size=16).hexdigest()

    async def take(self, client: str, cost: float) -> Decision:
        allowed, tokens, now = await asyncio.wait_for(
            self._script(keys=[self.key(client)], args=[self.rate, self.burst, cost]),
            REDIS_TIMEOUT * 2)
        return _decision(bool(int(allowed)), self.rate, self.burst, float(tokens), cost,
                         float(now))

    async def close(self) -> None:
        await self._redis.aclose()


class RateLimiter:
    """What the request path asks: may this client spend this much now?"""

    def __init__(self, rate: float, burst: float | None = None, *,
                 costs: Sequence[tuple[str, float]] = (), redis_url: str | None = None,
                 fail: str = "open") -> None:
        if rate <= 0:
            raise ValueError("rate must be above zero")
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self.fail = fail
        self._costs = tuple(costs)
        self.priced = bool(self._costs)  # whether any cost is set (else every request costs 1)
        self.local = LocalBuckets(self.rate, self.burst)
        self.redis = RedisBuckets(redis_url, self.rate, self.burst) if redis_url else None
        self.redis_failures = 0
        self.on_redis_failure: Callable[[], None] | None = None  # the metrics' counter
        self.rejected = 0
        self._redis_down_until = 0.0
        self._warned_at = -_WARN_EVERY
        self._cost = lru_cache(maxsize=4096)(self._cost_of)


    def cost(self, path: str) -> float:
        """The cost of a call to ``path`` (a canonical RPC path, or any route's path)."""
        return self._cost(path) if self._costs else 1.0

    def _cost_of(self, path: str) -> float:
        name = path.lstrip("/")
        for pattern, cost in self._costs:
            if fnmatchcase(name, pattern.lstrip("/")):
                return cost
        return 1.0

    def spend_here(self, client: str, cost: float, headers: dict[str, str]) -> Decision | None:
        """Spend from this process's bucket (no Redis): None if allowed, else the refusal.

        The bucket's state goes into ``headers`` either way.
        """
        refused = self.local.spend(client, min(cost, self.burst), headers)
        if refused is not None:
            self.rejected += 1
        return refused

    async def check(self, client: str, cost: float = 1.0) -> Decision:
        cost = min(cost, self.burst)
        if self.redis is not None and time.monotonic() >= self._redis_down_until:
            try:
                decision = await self.redis.take(client, cost)
            except Exception as e:  # noqa: BLE001 - any Redis failure is an outage here
                self._redis_failed(e)
            else:
                return self._count(decision)
        if self.redis is not None and self.fail == "closed":
            raise GatewayError(503, errors.UNAVAILABLE,
                               "rate limiter unavailable (Redis unreachable, "
                               "RATE_LIMIT_FAIL=closed)", headers={"Retry-After": "1"})
        return self._count(self.local.take(client, cost))

    def _count(self, decision: Decision) -> Decision:
        if not decision.allowed:
            self.rejected += 1
        return decision

    def _redis_failed(self, exc: Exception) -> None:
        self.redis_failures += 1
        if self.on_redis_failure is not None:
            self.on_redis_failure()
        now = time.monotonic()
        self._redis_down_until = now + REDIS_RETRY_AFTER
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning("rate limiter: Redis unreachable (%s); %s", type(exc).__name__,
                        "refusing requests (RATE_LIMIT_FAIL=closed)" if self.fail == "closed"
                        else "limiting with this process's own buckets meanwhile")

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()


def rate_limited(decision: Decision) -> GatewayError:
    return GatewayError(429, errors.RESOURCE_EXHAUSTED,
                        f"rate limit exceeded: {_number(decision.limit)} requests per second; "
                        f"retry after {max(1, math.ceil(decision.retry_after))} s")


# ---------------------------------------------------------------------------
# who the client is
# ---------------------------------------------------------------------------
def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """``TRUSTED_PROXIES`` entries: addresses or CIDR blocks."""
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {item!r}") from None
    return tuple(out)


def _trusted(addr: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_address(peer: str | None, forwarded_for: str | None,
                   trusted: Sequence[Network]) -> str:
    """The caller's address: the peer, or, behind trusted proxies, who they forwarded.

    ``X-Forwarded-For`` is read right to left, skipping trusted proxies; the
    first address that is not one is the client. A peer that is not trusted
    cannot make the gateway believe any address but its own.
    """
    addr = peer or "unknown"
    if not forwarded_for or not trusted or not _trusted(addr, trusted):
        return addr
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return addr  # garbage from the first untrusted hop: use what we know
        addr = hop
    return addr
