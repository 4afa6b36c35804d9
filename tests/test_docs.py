"""The docs are the contract: every setting is in the README, docs/protocol.md's reference
tables are generated from the code and current, and every doc cited exists."""

from __future__ import annotations

import re
from pathlib import Path

from app import contract_documents, create_app
from config import Settings
from namespaces import ALL
from server.openapi import api_routes
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"OURS_{n.upper()}" for n in Settings.model_fields if f"OURS_{n.upper()}" not in readme
    ]
    assert not missing, f"README.md lacks {missing}"


def test_generated_tables_are_current(tmp_path: Path) -> None:
    """docs/protocol.md's reference tables (every HTTP route, socket event, server event and
    error code) and docs/operations.md's metrics are what the code renders now."""
    from server import reference

    openapi, asyncapi = contract_documents(make_settings(tmp_path))
    stale = []
    for name, blocks in reference.blocks_by_doc(openapi, asyncapi).items():
        text = (ROOT / "docs" / name).read_text()
        if reference.rewrite(text, blocks, name) != text:
            stale.append(name)
    assert not stale, f"stale generated tables in docs/{stale}: run `ours contract --write`"


def test_the_tables_name_every_route_and_event(tmp_path: Path) -> None:
    """The rendering itself leaves nothing out: each route and client event has its row."""
    from server import reference

    openapi, asyncapi = contract_documents(make_settings(tmp_path))
    http = reference.http_routes(openapi)
    app = create_app(make_settings(tmp_path))
    for method, path, _handler in api_routes(app):
        assert f"`{method.upper()} {path}`" in http
    sockets = reference.socket_events(asyncapi)
    for path, cls in ALL.items():
        section = sockets.split(f"#### `{path}` — client events")[1].split("#### ")[0]
        for event in cls.client_events():
            assert f"| `{event}` |" in section, (path, event)


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
