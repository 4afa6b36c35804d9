"""The cluster at a glance, as `ours status`, `GET /v1/admin/cluster` and the console's operator
view show it: every node from its heartbeat (server/nodes.py) with totals over the nodes that
are up, the bus per consumer group (lag, pending), dead letters, the scheduler's backlog, and
whether PostgreSQL and Redis answer, with their round-trip time. On a Redis Cluster, Redis is
the cluster's own view of its nodes (CLUSTER NODES: primaries and replicas) and of itself
(CLUSTER INFO): it is up when it says `cluster_state:ok` and every primary serving slots is
reachable; a replica down, or a failed primary whose slots its replica took over, shows on its
row without making Redis down.

`gather` builds the document (one shape for the route, the command's `--json` and the page);
`render` turns it into the terminal text of `ours status`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from server import errors

if TYPE_CHECKING:
    from server.node import Node


async def _timed(check: Callable[[], Awaitable[object]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        await check()
    except Exception as exc:  # any failure is the answer: the dependency is down
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": True, "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}


async def gather(node: Node) -> dict[str, Any]:
    nodes = await node.nodes.list()
    up = [n for n in nodes if n["state"] == "up"]
    connections: dict[str, int] = {}
    for n in up:
        for ns, count in (n["stats"].get("connections") or {}).items():
            connections[ns] = connections.get(ns, 0) + int(count)

    async def pg() -> None:
        await node.storage.db.fetchval("SELECT 1")

    return {
        "nodes": nodes,
        "totals": {
            "nodes_up": len(up),
            "nodes_gone": sum(1 for n in nodes if n["state"] == "gone"),
            "connections": connections,
            "connections_total": sum(connections.values()),
            "users": sum(int(n["stats"].get("users", 0)) for n in up),
            "rooms": sum(int(n["stats"].get("rooms", 0)) for n in up),
        },
        "bus": {
            "backend": "redis" if node.settings.redis_url else "in-process",
            "groups": await node.bus.groups(),
            "dead_letters": await node.bus.dead_letter_count(),
        },
        "scheduler": await node.scheduler.backlog(),
        "postgres": {"embedded": not node.settings.database_url, **await _timed(pg)},
        "redis": await redis_check(node.redis, cluster=node.settings.redis_cluster),
    }


async def redis_check(redis: Any, *, cluster: bool) -> dict[str, Any]:
    """`{used, ok, latency_ms | error}` of the process's Redis client (None: not used). On a
    cluster, `ok` and `latency_ms` are those of CLUSTER INFO and CLUSTER NODES asked of a
    primary that answers, with `cluster: true` and `nodes`: the cluster's own view of each of
    its nodes (`node`, `role`, `slots` served, `ok`, `flags`), replicas included, which the
    client's slot map may not list."""
    if redis is None:
        return {"used": False}
    if not cluster:
        return {"used": True, **await _timed(redis.ping)}
    view: dict[str, Any] = {}

    async def ask() -> None:
        with contextlib.suppress(Exception):  # unreachable: the slot map it had is what is known
            await redis.initialize()
        for primary in redis.get_primaries():
            try:
                view["state"] = (await redis.cluster_info(target_nodes=primary))["cluster_state"]
                view["nodes"] = await redis.execute_command("CLUSTER NODES", target_nodes=primary)
            except errors.REDIS_ERRORS:
                continue
            rows = [_cluster_node(address, n) for address, n in view["nodes"].items()]
            view["rows"] = sorted(rows, key=lambda r: (r["role"] != "primary", r["node"]))
            break
        else:
            raise ConnectionError("no primary answers")
        if view["state"] != "ok":
            raise ConnectionError(f"cluster_state:{view['state']}")
        down = [r["node"] for r in view["rows"] if r["slots"] and not r["ok"]]
        if down:
            raise ConnectionError("primary down: " + ", ".join(down))

    check = await _timed(ask)
    return {"used": True, "cluster": True, **check, "nodes": view.get("rows", [])}


def _cluster_node(address: str, node: dict[str, Any]) -> dict[str, Any]:
    """A row of CLUSTER NODES: down when the cluster flags it failing or its link is down."""
    flags = set(node["flags"].split(",")) - {"myself"}
    return {
        "node": address,
        "role": "primary" if "master" in flags else "replica",
        "slots": sum(int(end) - int(start) + 1 for start, end in node["slots"]),
        "ok": bool(node["connected"]) and not flags & {"fail", "fail?", "noaddr"},
        "flags": ",".join(sorted(flags)),
    }


# -- the terminal -----------------------------------------------------------------------------


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _dep(name: str, d: dict[str, Any]) -> str:
    if d.get("used") is False:
        return f"{name}: not used"
    if d["ok"]:
        return f"{name}: ok ({d['latency_ms']} ms)"
    return f"{name}: DOWN — {d['error']}"


def render(status: dict[str, Any]) -> str:
    t = status["totals"]
    lines = [
        f"nodes: {t['nodes_up']} up, {t['nodes_gone']} gone · connections "
        f"{t['connections_total']} · users {t['users']} · rooms {t['rooms']}",
        "",
    ]
    rows = [["NODE", "ROLE", "STATE", "STARTED", "SEEN", "CONNECTIONS", "ROOMS", "LOOP LAG"]]
    for n in status["nodes"]:
        s = n["stats"]
        conns = s.get("connections") or {}
        per_ns = " ".join(f"{ns}={c}" for ns, c in sorted(conns.items()) if c) or "-"
        rows.append(
            [
                n["id"] + (" *" if n.get("self") else ""),
                n["role"],
                n["state"],
                n["started_at"][:19].replace("T", " "),
                f"{n['seen_s_ago']:.0f}s ago",
                f"{sum(conns.values())} ({per_ns})",
                str(s.get("rooms", 0)),
                f"{s.get('loop_lag_ms', 0)} ms",
            ]
        )
    lines += _table(rows) if len(rows) > 1 else ["(no node has reported yet)"]
    bus = status["bus"]
    lines += ["", f"bus ({bus['backend']}): dead letters {bus['dead_letters']}"]
    grows = [["GROUP", "LAG", "PENDING"]]
    for group, g in sorted(bus["groups"].items()):
        grows.append([group, str(g["lag"]), str(g["pending"])])
    lines += ["  " + line for line in _table(grows)]
    sch = status["scheduler"]
    lines += [
        "",
        f"scheduler: {sch['due']} due now, {sch['running']} running, {sch['scheduled']} later,"
        f" {sch['failed']} failed",
        _dep(
            "postgresql" + (" (embedded)" if status["postgres"]["embedded"] else ""),
            status["postgres"],
        ),
        _dep("redis" + (" cluster" if status["redis"].get("cluster") else ""), status["redis"]),
        *(
            f"  {n['node']} {n['role']} ({n['slots']} slots): "
            + ("ok" if n["ok"] else f"DOWN ({n['flags']})")
            for n in status["redis"].get("nodes", [])
        ),
        "(* = the node that answered)",
    ]
    return "\n".join(lines)
