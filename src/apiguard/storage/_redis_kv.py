"""The key-value part on Redis: claims with owner tokens, as one Lua script per call.

Each entry is one Redis string under `apiguard:kv:{<escaped key>}` (one key:
one cluster slot, any client key): `c<token><note>` while claimed (the token
is 32 hex digits), `v<bytes>` once a value is put, with the expiry as the
key's TTL. Every call that must check
an owner and write is one script, so it is atomic on a single node, behind
Sentinel and on Redis Cluster alike: of two concurrent claims, one sees the
key absent and sets it.
"""

from __future__ import annotations

import math
import secrets
from typing import TYPE_CHECKING, Any, Final

from apiguard.storage._base import Claim
from apiguard.storage._keys import kv_key
from apiguard.storage._resp import Script

if TYPE_CHECKING:
    from apiguard.storage._redis import RedisStore

__all__ = ["KV_SCRIPTS", "RedisKeyValue"]

#: KEYS[1]; ARGV: token, ttl ms, note. Returns 1 (claimed), the value (bytes), or
#: `{note}` (held by another claim, with the note it was claimed with).
CLAIM: Final = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'c' .. ARGV[1] .. ARGV[3], 'PX', ARGV[2])
  return 1
end
if string.sub(v, 1, 1) == 'v' then return string.sub(v, 2) end
return {string.sub(v, 34)}
"""
#: KEYS[1]; ARGV: token, ttl ms. 1 when renewed.
RENEW: Final = """
if string.sub(redis.call('GET', KEYS[1]) or '', 1, 33) == 'c' .. ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
#: KEYS[1]; ARGV: token. 1 when released.
RELEASE: Final = """
if string.sub(redis.call('GET', KEYS[1]) or '', 1, 33) == 'c' .. ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
#: KEYS[1]; ARGV: token, value, ttl ms. 1 when the claim became the value.
PUT_OWNED: Final = """
if string.sub(redis.call('GET', KEYS[1]) or '', 1, 33) == 'c' .. ARGV[1] then
  redis.call('SET', KEYS[1], 'v' .. ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
#: KEYS[1]; ARGV: value, ttl ms. 1 when stored (no live claim stood in the way).
PUT_FREE: Final = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 1) == 'c' then return 0 end
redis.call('SET', KEYS[1], 'v' .. ARGV[1], 'PX', ARGV[2])
return 1
"""

KV_SCRIPTS: Final = {
    "kv-claim": CLAIM,
    "kv-renew": RENEW,
    "kv-release": RELEASE,
    "kv-put-owned": PUT_OWNED,
    "kv-put-free": PUT_FREE,
}
_RESP_SCRIPTS: Final = {name: Script(text) for name, text in KV_SCRIPTS.items()}


def _ms(ttl: float) -> bytes:
    return b"%d" % max(math.ceil(ttl * 1000), 1)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


class RedisKeyValue:
    """The key-value part of a [`RedisStore`][apiguard.storage.RedisStore].

    Calls go through the store's timeout and breaker, on apiguard's RESP
    client for a single node and on redis-py for cluster and sentinel.
    """

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    async def _script(self, name: str, key: str, args: list[bytes], timeout: float | None) -> Any:
        store = self._store
        name_key = kv_key(key)
        if store.endpoint is None:
            script = store.script(name)
            breaker = store.breaker_for(name_key)
            return await store.guarded(lambda: script(keys=[name_key], args=args), timeout, breaker)
        resp_script = _RESP_SCRIPTS[name]
        tail = _bulk(name_key) + b"".join(_bulk(arg) for arg in args)

        async def call() -> Any:
            return await store.client().evalsha(resp_script, 1, tail, 1 + len(args))

        return await store.guarded(call, timeout)

    async def _command(self, command: str, key: bytes, timeout: float | None) -> Any:
        store = self._store
        if store.endpoint is None:
            # A str command name: redis-py's cluster client looks commands up
            # by name (a bytes name raises TypeError there).
            client = store.redis_py()
            breaker = store.breaker_for(key)
            return await store.guarded(
                lambda: client.execute_command(command, key), timeout, breaker
            )

        async def call() -> Any:
            return await store.client().command(command, key)

        return await store.guarded(call, timeout)

    async def claim(
        self, key: str, ttl: float, *, note: bytes = b"", timeout: float | None = None
    ) -> Claim:
        """Claim `key` for `ttl` seconds if nobody holds it; or say what holds it."""
        token = secrets.token_hex(16)  # 32 hex digits: the scripts rely on it
        args = [token.encode(), _ms(ttl), bytes(note)]
        reply = await self._script("kv-claim", key, args, timeout)
        if reply == 1:
            return Claim(token)
        if isinstance(reply, bytes):
            return Claim(None, reply)
        held = reply[0] if isinstance(reply, list) and reply else b""
        return Claim(None, None, held if isinstance(held, bytes) else b"")

    async def renew(
        self, key: str, token: str, ttl: float, *, timeout: float | None = None
    ) -> bool:
        """Extend the claim `token` holds to `ttl` seconds from now."""
        reply = await self._script("kv-renew", key, [token.encode(), _ms(ttl)], timeout)
        return bool(reply == 1)

    async def release(self, key: str, token: str, *, timeout: float | None = None) -> bool:
        """Drop the claim `token` holds."""
        return bool(await self._script("kv-release", key, [token.encode()], timeout) == 1)

    async def put(
        self,
        key: str,
        value: bytes,
        ttl: float,
        *,
        token: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Store `value`: over the claim `token` holds, or where no claim is live."""
        if token is not None:
            args = [token.encode(), bytes(value), _ms(ttl)]
            return bool(await self._script("kv-put-owned", key, args, timeout) == 1)
        reply = await self._script("kv-put-free", key, [bytes(value), _ms(ttl)], timeout)
        return bool(reply == 1)

    async def get(self, key: str, *, timeout: float | None = None) -> bytes | None:
        """The value under `key`, or `None` (absent, expired, or only claimed)."""
        reply = await self._command("GET", kv_key(key), timeout)
        if isinstance(reply, bytes) and reply[:1] == b"v":
            return reply[1:]
        return None

    async def delete(self, key: str, *, timeout: float | None = None) -> None:
        """Forget `key`."""
        await self._command("DEL", kv_key(key), timeout)
