"""The test suite's fake FCM (tests/fakes/fcm.py) as its own process, for bench/notify.

    python -m bench.notify.fake_fcm --port 9001 --service-account /tmp/sa.json \
        [--throttle-every K] [--latency SECONDS]

Writes the service-account JSON (token_uri = this fake), prints "ready" and serves until
SIGTERM (HTTP/1.1, plain http://). Tokens starting with `gone-` answer 404 UNREGISTERED; with
`--throttle-every K` every K-th send answers 429 with `Retry-After: 1`; `--latency` delays each
answer. GET /_stats answers how many requests arrived (`requests`), how many were accepted and
when the first and last were, the count per HTTP status (`statuses`) and per token accepted
(`per_token`: none lost, none twice).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from tests.fakes.fcm import FakeFCM


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--service-account", type=Path, required=True)
    p.add_argument("--throttle-every", type=int, default=0, metavar="K")
    p.add_argument("--latency", type=float, default=0.0, metavar="SECONDS")
    args = p.parse_args()
    fake = FakeFCM(project_id="ours-bench")
    fake.throttle_every = args.throttle_every
    fake.latency = args.latency
    await fake.start(args.port)
    fake.service_account(args.service_account)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.stop()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
