"""The HTTP contract: /v1/openapi.json against the routes the app really registers and against
what a real server answers — schemathesis fuzzes every operation, a TypeScript client is
generated from the document and type-checked, and the document validates against the OpenAPI
3.1 specification. (Every success answer in every other test is also checked against the
document at runtime: `check_contract`.)"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from openapi_spec_validator import validate as validate_openapi

from app import create_app
from server.openapi import api_routes, operation_of
from tests.conftest import API_KEY, PgCluster, free_port, make_settings
from tests.fakes.cloudflare import FakeCloudflare
from tests.fakes.livekit import FakeLiveKit
from tests.fakes.telegram import FakeTelegram
from tests.helpers import ROOT, ServerHandle, spawn_server, stop_process

CONTRACT = Path(ROOT) / "tests" / "contract"
NPM_BIN = CONTRACT / "node_modules" / ".bin"


@pytest.fixture
async def served(tmp_path: Path, pg_clusters: dict[str, PgCluster]) -> AsyncIterator[ServerHandle]:
    """`ours serve` as a real process on the embedded default (its own PostgreSQL database),
    with every provider its HTTP routes use on, pointed at the local fakes (LiveKit,
    Cloudflare Stream, Telegram in webhook mode): no route answers "not configured"."""
    dsn = await pg_clusters["embedded"].fresh()
    livekit, cloudflare, telegram = FakeLiveKit(), FakeCloudflare(), FakeTelegram()
    await livekit.start(free_port())
    await cloudflare.start(free_port())
    await telegram.start()
    key_id, key_pem = cloudflare.create_signing_key()
    settings = make_settings(
        tmp_path,
        database_url=dsn,
        livekit_url=livekit.url,
        livekit_ws_url="wss://livekit.test",
        livekit_api_key=livekit.api_key,
        livekit_api_secret=livekit.api_secret,
        cloudflare_account_id=cloudflare.account_id,
        cloudflare_api_token=cloudflare.api_token,
        cloudflare_base_url=cloudflare.base_url,
        cloudflare_webhook_secret=cloudflare.webhook_secret,
        cloudflare_notification_secret="notify-secret-0123456789",
        cloudflare_signing_key_id=key_id,
        cloudflare_signing_key_pem=key_pem,
        telegram_bot_token=telegram.token,
        telegram_api_base=telegram.url,
        telegram_mode="webhook",
        telegram_webhook_secret="webhook-secret-0123456789",
    )
    handle = await spawn_server(settings, free_port())
    try:
        yield handle
    finally:
        assert handle.proc is not None
        stop_process(handle.proc)
        await livekit.stop()
        await cloudflare.stop()
        await telegram.stop()


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def _app(tmp_path: Path) -> Any:
    return create_app(make_settings(tmp_path))


def test_every_route_is_in_the_document_with_its_schemas(tmp_path: Path) -> None:
    """Each route the aiohttp app registers is an operation with a response schema, and its
    parameters or request body; removing one declaration (`@operation`) fails this test."""
    from server.openapi import openapi_document

    app = _app(tmp_path)
    doc = openapi_document(app)
    missing, incomplete = [], []
    for method, path, handler in api_routes(app):
        entry = doc["paths"].get(path, {}).get(method)
        if entry is None or operation_of(handler) is None:
            missing.append(f"{method.upper()} {path}")
            continue
        ok = [s for s in entry["responses"] if s.startswith(("2", "3"))]
        if not ok or not all(
            c.get("schema") for s in ok for c in entry["responses"][s]["content"].values()
        ):
            incomplete.append(f"{method.upper()} {path}: no success response schema")
        if method in ("post", "put", "patch") and "requestBody" not in entry:
            incomplete.append(f"{method.upper()} {path}: no request body schema")
        declared = {p["name"] for p in entry.get("parameters", []) if p["in"] == "path"}
        wanted = {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}
        if declared != wanted:
            incomplete.append(f"{method.upper()} {path}: path parameters {declared}")
        for status, resp in entry["responses"].items():
            if status.startswith(("4", "5")) and "error:" not in resp["description"]:
                incomplete.append(f"{method.upper()} {path} {status}: no error codes")
    assert not missing, f"routes without an @operation (not in /v1/openapi.json): {missing}"
    assert not incomplete, incomplete


async def test_every_operation_in_the_document_is_served(tmp_path: Path) -> None:
    """The other way round: each documented operation resolves to a handler of the app (not
    the router's 404 or 405), and it is the handler that declared it."""
    from server.openapi import openapi_document

    app = _app(tmp_path)
    doc = openapi_document(app)
    assert doc["paths"]
    for path, methods in doc["paths"].items():
        for method in methods:
            concrete = path.replace("{", "x").replace("}", "")
            req = make_mocked_request(method.upper(), concrete, app=app)
            match = await app.router.resolve(req)
            assert match.http_exception is None, f"{method.upper()} {path} is not served"
            assert match.route.resource is not None
            assert match.route.resource.canonical == path
            assert operation_of(match.handler) is not None


async def test_served_documents_validate_against_their_specifications(
    served: ServerHandle,
) -> None:
    """`curl /v1/openapi.json` and `/v1/asyncapi.json` on a real `ours serve`: the first
    validates as OpenAPI 3.1 (openapi-spec-validator), the second with the official AsyncAPI
    parser (@asyncapi/parser, tests/contract/asyncapi-validate.mjs)."""
    doc = await _get_json(served.url + "/v1/openapi.json")
    assert doc["openapi"] == "3.1.0"
    validate_openapi(doc)
    node = shutil.which("node")
    assert node, "node is required (README: scripts/test installs the contract tools)"
    run = subprocess.run(
        [node, str(CONTRACT / "asyncapi-validate.mjs"), served.url + "/v1/asyncapi.json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "valid AsyncAPI 3.0.0" in run.stdout, run.stdout


async def test_a_typescript_client_generated_from_the_document_type_checks_and_runs(
    served: ServerHandle, tmp_path: Path
) -> None:
    """openapi-typescript turns the served document into types; tests/contract/client.ts
    calls three routes through them and must type-check (tsc --strict), then runs against the
    server. A document without one of those routes or their schemas fails here."""
    work = tmp_path / "client"
    work.mkdir()
    gen = subprocess.run(
        [
            str(NPM_BIN / "openapi-typescript"),
            served.url + "/v1/openapi.json",
            "-o",
            str(work / "openapi.d.ts"),
            # a field with a default is optional to send (the default is true for responses)
            "--default-non-nullable",
            "false",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gen.returncode == 0, gen.stdout + gen.stderr
    shutil.copy(CONTRACT / "client.ts", work / "client.ts")
    (work / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "strict": True,
                    "target": "ES2022",
                    "module": "ES2022",
                    "moduleResolution": "bundler",
                    "lib": ["ES2022", "DOM"],
                    "outDir": "dist",
                    "skipLibCheck": False,
                    "typeRoots": [str(CONTRACT / "node_modules" / "@types")],
                    "types": ["node"],
                },
                "files": ["client.ts"],
            }
        )
    )
    tsc = subprocess.run(
        [str(NPM_BIN / "tsc"), "-p", str(work)], capture_output=True, text=True, timeout=180
    )
    assert tsc.returncode == 0, tsc.stdout + tsc.stderr
    (work / "dist" / "package.json").write_text('{"type": "module"}')
    ran = subprocess.run(
        ["node", str(work / "dist" / "client.js")],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "OURS_URL": served.url,
            "OURS_API_KEY": API_KEY,
            "OURS_TOKEN": served.token("u_ts"),
        },
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    result = json.loads(ran.stdout)
    assert result["health"] == "ok"
    assert result["published"]["duplicate"] is False
    assert isinstance(result["preferences"], dict)


SCHEMATHESIS_CONFIG = """
# written by tests/test_contract_http.py for one run
[checks.positive_data_acceptance]
# valid input may still name something that is not there, or that this caller may not touch
expected-statuses = [200, 201, 202, 301, 401, 403, 404, 409]

[auth.openapi.apiKey]
bearer = "{api_key}"

[auth.openapi.userJwt]
bearer = "{user_token}"

[auth.openapi.adminJwt]
bearer = "{admin_token}"
"""


async def test_schemathesis_finds_nothing(served: ServerHandle, tmp_path: Path) -> None:
    """schemathesis (PyPI) generates requests from /v1/openapi.json — valid and invalid ones,
    the documented examples, and stateful sequences — against a real server: no 5xx, every
    response (status, headers, content type, body) as documented, invalid input refused."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        SCHEMATHESIS_CONFIG.format(
            api_key=API_KEY,
            user_token=served.token("u_fuzz"),
            admin_token=served.token("u_admin", role="admin"),
        )
    )
    # not subprocess.run: the fakes the server calls live on this test's event loop
    proc = await asyncio.create_subprocess_exec(
        *[
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(config),
            "run",
            served.url + "/v1/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--workers",
            "2",
            "--seed",
            "1",
            "--no-color",
        ],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 600)
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-20000:]
    # it tested every route the app serves: a route missing from the document fails here too
    # (schemathesis counts `/console` and `/console/` as one operation)
    served_routes = len(
        {(m, p.rstrip("/") or "/") for m, p, _h in api_routes(_app(tmp_path / "app"))}
    )
    tested = re.search(r"Operations:\s+(\d+) selected / (\d+) total", report)
    assert tested, report[:3000]
    assert int(tested.group(1)) == int(tested.group(2)) == served_routes, tested.group(0)
