"""The test suite's fake FCM (tests/fakes/fcm.py) as its own process, for bench/notify.

    python -m bench.notify.fake_fcm --port 9001 --service-account /tmp/sa.json

Writes the service-account JSON (token_uri = this fake), prints "ready" and serves until
SIGTERM. GET /_stats answers how many messages arrived and when the first and last did.
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
    args = p.parse_args()
    fake = FakeFCM(project_id="ours-bench")
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
