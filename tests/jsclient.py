"""Drive the official JS `socket.io-client` (tests/e2e/driver.mjs) from Python tests."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
from typing import Any

E2E_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e")


def available() -> bool:
    return shutil.which("node") is not None and os.path.isdir(
        os.path.join(E2E_DIR, "node_modules", "socket.io-client")
    )


class JsClients:
    """One Node process holding any number of official socket.io-client sockets."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> JsClients:
        self.proc = await asyncio.create_subprocess_exec(
            "node",
            os.path.join(E2E_DIR, "driver.mjs"),
            cwd=E2E_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        """Route each reply to the call waiting for its seq (calls may overlap)."""
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            reply = json.loads(line)
            fut = self._waiting.pop(reply.get("seq"), None)
            if fut is not None and not fut.done():
                fut.set_result(reply)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RuntimeError("JS driver exited"))

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        if self._reader is not None:
            self._reader.cancel()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()

    async def _call(self, **msg: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        seq = next(self._seq)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = fut
        self.proc.stdin.write((json.dumps({"seq": seq, **msg}) + "\n").encode())
        await self.proc.stdin.drain()
        timeout = msg.get("timeout", 5000) / 1000 + 10
        return dict(await asyncio.wait_for(fut, timeout))

    async def connect(
        self, url: str, ns: str, auth: Any, **opts: Any
    ) -> tuple[str, dict[str, Any]]:
        cid = f"c{next(self._ids)}"
        res = await self._call(cmd="connect", id=cid, url=url, ns=ns, auth=auth, **opts)
        return cid, res

    async def emit(self, cid: str, event: str, data: Any = None, ack: bool = True) -> Any:
        res = await self._call(cmd="emit", id=cid, event=event, data=data, ack=ack)
        if not res["ok"]:
            raise RuntimeError(res.get("message"))
        return res.get("ack")

    async def wait(self, cid: str, event: str, count: int = 1, timeout: float = 5) -> list[Any]:
        res = await self._call(
            cmd="wait", id=cid, event=event, count=count, timeout=int(timeout * 1000)
        )
        if not res["ok"]:
            raise TimeoutError(f"{cid}: {len(res['events'])}/{count} {event!r}")
        return list(res["events"])

    async def received(self, cid: str, event: str) -> list[Any]:
        return list((await self._call(cmd="received", id=cid, event=event))["events"])

    async def close(self, cid: str) -> None:
        await self._call(cmd="close", id=cid)
