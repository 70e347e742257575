"""Lua scripts on pipelines, without the extra round trip redis-py adds.

A script registered with redis-py and queued on a pipeline makes that pipeline send `SCRIPT EXISTS` and
wait for the answer before it sends anything else: one more round trip for every pipeline that carries a
script, which on Tailor's paths is every Decide's write and every TrackEvents fold. `LuaScript.queue`
queues a bare `EVALSHA` instead, and `run_scripts` runs a pipeline that holds only such scripts. Should
Redis no longer know a script (restarted, or its script cache flushed), every `EVALSHA` of that pipeline
failed with NOSCRIPT and did nothing, so the scripts are loaded and the pipeline is built and run once
more; that is the only time a script's text crosses the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError


class LuaScript:
    def __init__(self, client: aioredis.Redis, source: str) -> None:
        self.client = client
        self._script = client.register_script(source)  # computes the SHA locally; sends nothing

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Queue one run on a pipeline (run it with `run_scripts`)."""
        pipe.evalsha(self._script.sha, len(keys), *keys, *args)

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run it on its own: one round trip (redis-py loads it first if Redis does not have it)."""
        return await self._script(keys=list(keys), args=list(args))

    async def load(self) -> None:
        await self.client.script_load(self._script.script)


async def run_scripts(client: aioredis.Redis, build: Callable[[Any], None], scripts: Sequence[LuaScript]) -> list[Any]:
    """Build a pipeline of `LuaScript.queue` calls only, run it in one round trip, return its replies."""
    for attempt in (1, 2):
        async with client.pipeline(transaction=False) as pipe:
            build(pipe)
            try:
                replies: list[Any] = await pipe.execute()
                return replies
            except NoScriptError:
                if attempt == 2:
                    raise
        for script in scripts:
            await script.load()
    raise AssertionError("unreachable")
