"""The docs are the contract: every setting is in the README, every socket event a namespace
handles and every HTTP route is in docs/protocol.md, and every doc cited exists."""

from __future__ import annotations

import re
from pathlib import Path

from app import create_app
from config import Settings
from namespaces import ALL
from tests.conftest import PgCluster, make_settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"OURS_{n.upper()}" for n in Settings.model_fields if f"OURS_{n.upper()}" not in readme
    ]
    assert not missing, f"README.md lacks {missing}"


def test_every_socket_event_is_in_the_protocol() -> None:
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    missing = sorted(
        f"{path} {event}"
        for path, cls in ALL.items()
        for event in cls._handlers
        if f"`{event}`" not in protocol
    )
    assert not missing, f"docs/protocol.md lacks {missing}"


def test_every_http_route_is_in_the_protocol(tmp_path: Path) -> None:
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    app = create_app(make_settings(tmp_path))
    missing = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method == "HEAD" or path.startswith(("/socket.io", "/console/static")):
            continue
        if path not in protocol:
            missing.append(f"{route.method} {path}")
    assert not missing, f"docs/protocol.md lacks {sorted(set(missing))}"


async def test_openapi_lists_every_route(tmp_path: Path, pg_clusters: dict[str, PgCluster]) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    dsn = await pg_clusters["embedded"].fresh()
    app = create_app(make_settings(tmp_path, database_url=dsn))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/v1/openapi.json")
        doc = await resp.json()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method == "HEAD" or path.startswith(("/socket.io", "/console/static")):
            continue
        assert route.method.lower() in doc["paths"][path], (route.method, path)


def test_every_doc_the_code_and_docs_cite_exists() -> None:
    """A `docs/….md` named in the source, the docs or the README is there to read."""
    cited = re.compile(r"docs/[\w.-]+\.md")
    skip = {".venv", "node_modules", ".git", "build", "var"}
    missing = set()
    for path in ROOT.rglob("*"):
        if path.suffix not in {".py", ".md", ".js", ".toml"} or skip & set(path.parts):
            continue
        for name in cited.findall(path.read_text(errors="replace")):
            if not (ROOT / name).is_file():
                missing.add(f"{path.relative_to(ROOT)} cites {name}")
    assert not missing, sorted(missing)
