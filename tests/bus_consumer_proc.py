"""A consumer process for the crash tests: takes one event from the Redis bus and hangs on it,
so the test can SIGKILL it mid-event. Arguments: the Redis URL, the stream, `1` for a Redis
Cluster, and `exclusive` for an exclusive group (one holder by lease, in stream order) or
`shared` for a plain one."""

from __future__ import annotations

import asyncio
import sys

from server.bus_redis import RedisBus
from server.events import Event


async def main(url: str, stream: str, cluster: bool, exclusive: bool) -> None:
    bus = RedisBus(url, stream=stream, visibility_timeout_ms=60_000, cluster=cluster)

    async def hang(event: Event) -> None:
        print(f"got {event.id}", flush=True)
        await asyncio.sleep(3600)

    bus.subscribe("work", hang, exclusive=exclusive)
    await bus.start()
    print("started", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "exclusive"))
