"""Micro-benchmark: ways to reach FCM HTTP v1 from this process, against the fake FCM in its
own process. Each way sends N one-device messages; we report wall time and this process's CPU
time per send (the CPU is what competes with the event loop for the GIL).

    .venv/bin/python -m bench.notify.push_clients -n 2000 [--concurrency 64]

Ways: `threads` (today: firebase-admin's sync `messaging.send` in 16 worker threads),
`sdk_async` (firebase-admin's `send_each_async`, 500 per call), `httpx_h1` (httpx.AsyncClient,
HTTP/1.1 keep-alive pool), `aiohttp` (aiohttp.ClientSession, HTTP/1.1) against the fake FCM
(HTTP/1.1, plain http://); and `httpx_h2` (httpx.AsyncClient over one multiplexed HTTP/2
connection, h2c prior knowledge) against a minimal HTTP/2 answerer in its own process (the h2
library; it answers 200 to every request without checking it, so the fake's own cost is
lower there than the fake FCM's: the client's CPU per send is the figure to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import firebase_admin
import google.auth.transport.requests
import httpx
from firebase_admin import credentials, messaging

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))

from common import free_port  # noqa: E402

PROJECT = "ours-bench"
FAKE = [sys.executable, "-m", "bench.notify.fake_fcm"]
HTTP2 = False
SCOPES = ["https://www.googleapis.com/auth/firebase.messaging"]


class H2Answerer(asyncio.Protocol):
    """h2c (prior knowledge): every request gets 200 and an FCM-like `{"name": ...}`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import h2.config
        import h2.connection

        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        import h2.events

        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                answer = json.dumps({"name": f"projects/{PROJECT}/messages/{event.stream_id}"})
                headers = [(":status", "200"), ("content-type", "application/json")]
                self.conn.send_headers(event.stream_id, headers)
                self.conn.send_data(event.stream_id, answer.encode(), end_stream=True)
        self.transport.write(self.conn.data_to_send())


async def serve_h2(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(H2Answerer, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def body(i: int) -> dict[str, Any]:
    return {
        "message": {
            "token": f"tok-{i}",
            "notification": {"title": "Live now", "body": "ana is live"},
            "data": {"notification_id": str(i)},
            "android": {"priority": "high", "collapse_key": f"n{i}"},
        }
    }


def sdk_message(i: int) -> messaging.Message:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return messaging.Message(
            token=f"tok-{i}",
            notification=messaging.Notification(title="Live now", body="ana is live"),
            data={"notification_id": str(i)},
            android=messaging.AndroidConfig(priority="high", collapse_key=f"n{i}"),
        )


def make_app(sa: Path, base: str) -> firebase_admin.App:
    info = json.loads(sa.read_text())
    app = firebase_admin.initialize_app(
        credentials.Certificate(info), {"projectId": PROJECT}, name=uuid.uuid4().hex
    )
    service = messaging._get_messaging_service(app)
    service._fcm_url = f"{base}/v1/projects/{PROJECT}/messages:send"
    return app


async def way_threads(n: int, sa: Path, base: str, conc: int) -> int:
    app = make_app(sa, base)
    import requests.adapters

    service = messaging._get_messaging_service(app)
    service._client.session.mount(base, requests.adapters.HTTPAdapter(pool_maxsize=16))
    pool = ThreadPoolExecutor(16)
    loop = asyncio.get_running_loop()
    msgs = [sdk_message(i) for i in range(n)]
    res = await asyncio.gather(
        *(loop.run_in_executor(pool, messaging.send, m, False, app) for m in msgs)
    )
    pool.shutdown()
    return len(res)


async def way_sdk_async(n: int, sa: Path, base: str, conc: int) -> int:
    app = make_app(sa, base)
    ok = 0
    for start in range(0, n, 500):
        msgs = [sdk_message(i) for i in range(start, min(n, start + 500))]
        resp = await messaging.send_each_async(msgs, app=app)
        ok += resp.success_count
    return ok


def access_token(sa: Path) -> str:
    from google.oauth2 import service_account

    creds = service_account.Credentials.from_service_account_file(str(sa), scopes=SCOPES)
    creds.refresh(google.auth.transport.requests.Request())
    return str(creds.token)


async def way_httpx_h1(n: int, sa: Path, base: str, conc: int) -> int:
    token = await asyncio.to_thread(access_token, sa)
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    sem = asyncio.Semaphore(conc)
    url = f"{base}/v1/projects/{PROJECT}/messages:send"
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(http2=HTTP2, limits=limits) as client:

        async def one(i: int) -> int:
            async with sem:
                r = await client.post(url, json=body(i), headers=headers)
                return r.status_code

        res = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(1 for s in res if s == 200)


async def way_aiohttp(n: int, sa: Path, base: str, conc: int) -> int:
    token = await asyncio.to_thread(access_token, sa)
    sem = asyncio.Semaphore(conc)
    url = f"{base}/v1/projects/{PROJECT}/messages:send"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:

        async def one(i: int) -> int:
            async with sem, s.post(url, json=body(i), headers=headers) as r:
                await r.read()
                return r.status

        res = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(1 for s in res if s == 200)


async def way_httpx_h2(n: int, sa: Path, base: str, conc: int) -> int:
    port = free_port()
    answerer = subprocess.Popen(
        [sys.executable, "-m", "bench.notify.push_clients", "--serve-h2", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        assert answerer.stdout is not None
        answerer.stdout.readline()
        token = await asyncio.to_thread(access_token, sa)
        sem = asyncio.Semaphore(conc)
        url = f"http://127.0.0.1:{port}/v1/projects/{PROJECT}/messages:send"
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(http1=False, http2=True) as client:

            async def one(i: int) -> int:
                async with sem:
                    r = await client.post(url, json=body(i), headers=headers)
                    return r.status_code

            res = await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        answerer.terminate()
        answerer.wait()
    return sum(1 for s in res if s == 200)


WAYS = {
    "threads": way_threads,
    "sdk_async": way_sdk_async,
    "httpx_h1": way_httpx_h1,
    "aiohttp": way_aiohttp,
    "httpx_h2": way_httpx_h2,
}


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--ways", default=",".join(WAYS))
    p.add_argument("--serve-h2", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_h2:
        await serve_h2(args.serve_h2)
        return
    tmp = Path(tempfile.mkdtemp(prefix="ours-push-clients-"))
    sa, port = tmp / "sa.json", free_port()
    fake = subprocess.Popen(
        [*FAKE, "--port", str(port), "--service-account", str(sa)],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        assert fake.stdout is not None
        fake.stdout.readline()  # "ready"
        base = f"http://127.0.0.1:{port}"
        for name in args.ways.split(","):
            cpu, wall = time.process_time(), time.perf_counter()
            ok = await WAYS[name](args.n, sa, base, args.concurrency)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(
                f"{name:10} ok {ok}/{args.n}  {args.n / wall:7.0f} sends/s"
                f"  {cpu / args.n * 1e6:6.0f} us CPU/send (this process)",
                flush=True,
            )
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    asyncio.run(main())
