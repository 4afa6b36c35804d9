"""bench/search: `message:search` latency in one conversation of N messages (default 100,000).

Starts `ours serve` on the embedded PostgreSQL (pgserver, a fresh data dir; bench/common.py
`Server`), then builds one direct conversation:

1. `conversation:open` by a real client (the conversation and its data key, as in production);
2. N - LIVE messages generated from a fixed seed (a Zipf vocabulary of pseudo-words, 3-20 words
   each, plus planted words of known frequency), sealed with the conversation's data key and
   COPYed into `messages` (set-up, timed but not the measure);
3. the search index built by the real code path, `Search.reindex` (what `ours search reindex`
   runs), in this process on the same database;
4. LIVE messages sent with `message:send` by the real client (indexed on post).

Then a second client (the other member) sends every query of the set (single words common to
rare, prefixes, several words, no match, and a worst case: two common words that rarely meet)
REPEAT times each, one at a time, and records each round trip. Each query's first page is
checked against the answer computed from the generated plaintexts (`Query.matches`), so a wrong
index fails the run. Reports p50 / p99 / max per query and overall, the load times and the
table sizes.

    bench/search/run --messages 100000 --repeat 200
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import socketio

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402
from common import Server, log  # noqa: E402

from app import compose  # noqa: E402
from config import Settings, load_settings  # noqa: E402
from messaging.keys import seal_message  # noqa: E402
from messaging.search import Query  # noqa: E402
from server.auth import issue_token  # noqa: E402

common.set_log_name("search")

MASTER_KEY = "5e" * 32
OURS_BENCH_ENV = {
    "OURS_RATE_USER_PER_MIN": "1000000",
    "OURS_RATE_IP_PER_MIN": "1000000",
    "OURS_RATE_CONNECT_PER_MIN": "100000",
    "OURS_MASTER_KEY": MASTER_KEY,
    "OURS_LOG_LEVEL": "WARNING",
}
NS = "/messages"
LIMIT = 20
LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
LETTER_WEIGHTS = [12, 9, 8, 7.5, 7, 6.7, 6.3, 6, 5.9, 4.3, 4, 2.8, 2.8, 2.4, 2.4, 2.2, 2, 2, 1.9,
                  1.5, 1, 0.8, 0.2, 0.2, 0.1, 0.1]  # fmt: skip
LENGTHS = list(range(2, 13))
LENGTH_WEIGHTS = [17, 20, 16, 11, 9, 8, 6, 4, 3, 2, 1]


# ------------------------------------------------------------------ the corpus
def corpus(n: int, seed: int, vocab_size: int) -> tuple[list[str], dict[str, str]]:
    """N message bodies and the planted words: `rare` in 3 messages, `common_a` and `common_b`
    each in ~20 % of them but together in 3 only."""
    rng = random.Random(seed)
    vocab: dict[str, None] = {}
    while len(vocab) < vocab_size:
        length = rng.choices(LENGTHS, LENGTH_WEIGHTS)[0]
        vocab["".join(rng.choices(LETTERS, LETTER_WEIGHTS, k=length))] = None
    words = list(vocab)
    zipf = [1 / (rank + 1) ** 1.07 for rank in range(len(words))]
    planted = {"rare": "quixotry", "common_a": "marmalade", "common_b": "xylophone"}
    assert not set(planted.values()) & set(words)
    bodies = []
    for _ in range(n):
        body = rng.choices(words, zipf, k=rng.randint(3, 20))
        r = rng.random()
        if r < 0.2:
            body.insert(rng.randrange(len(body) + 1), planted["common_a"])
        elif r < 0.4:
            body.insert(rng.randrange(len(body) + 1), planted["common_b"])
        bodies.append(" ".join(body))
    for i in rng.sample(range(n), 3):
        bodies[i] += " " + planted["rare"]
    for i in rng.sample(range(n), 3):
        bodies[i] += f" {planted['common_a']} {planted['common_b']}"
    planted["top1"], planted["top2"], planted["top10"] = words[0], words[1], words[9]
    planted["mid"] = words[min(1000, len(words) - 1)]
    planted["middle_message"] = bodies[n // 2]
    return bodies, planted


def queries(p: dict[str, str]) -> list[tuple[str, str]]:
    three = " ".join(p["middle_message"].split()[:3])
    return [
        ("word, most common", p["top1"]),
        ("word, 10th most common", p["top10"]),
        ("word, rank 1000", p["mid"]),
        ("word, rare (3 messages)", p["rare"]),
        ("word, no match", "zzzzqqq"),
        ("prefix, 2 letters", p["top1"][:2] if len(p["top1"]) >= 2 else "ea"),
        ("prefix, 3 letters of rank 1000", p["mid"][:3]),
        ("prefix, 5 letters of the rare word", p["rare"][:5]),
        ("2 words, the two most common", f"{p['top1']} {p['top2']}"),
        ("2 words, common + rare", f"{p['top1']} {p['rare']}"),
        ("2 words, rare + common prefix", f"{p['rare']} {p['top1'][:2]}"),
        ("3 words of one message", three),
        ("2 words, common that rarely meet (worst case)", f"{p['common_a']} {p['common_b']}"),
    ]


# ------------------------------------------------------------------ set-up
def settings_for(datadir: str, args: Any) -> Settings:
    """The server's settings, for this process: its data dir (the embedded PostgreSQL there)
    and its keys."""
    return load_settings(
        env="test",
        data_dir=Path(datadir),
        master_key=MASTER_KEY,
        jwt_secret=args.jwt_secret,
        api_keys=[args.api_key],
        log_level="WARNING",
    )


async def bulk_load(settings: Settings, cid: str, bodies: list[str]) -> dict[str, float]:
    """COPY the bodies into the conversation (sealed), then the index by `Search.reindex`."""
    composed = compose(settings)
    storage, messaging = composed.node.storage, composed.features.messaging
    await storage.open(migrate=False)
    try:
        key = await messaging.keys.key(cid)
        t0 = time.perf_counter()
        start = datetime.now(UTC) - timedelta(seconds=len(bodies))
        records = []
        for i, body in enumerate(bodies, 1):
            mid = str(uuid.uuid4())
            records.append(
                (
                    uuid.UUID(mid),
                    uuid.UUID(cid),
                    i,
                    "alice" if i % 2 else "bob",
                    f"bulk-{i}",
                    "text",
                    seal_message(key, cid, mid, body.encode()),
                    start + timedelta(seconds=i),
                )
            )
        cols = ["id", "conversation_id", "seq", "sender_id", "client_msg_id", "kind", "body"]
        async with storage.transaction() as conn:
            for at in range(0, len(records), 10_000):
                await conn.copy_records_to_table(
                    "messages", records=records[at : at + 10_000], columns=[*cols, "created_at"]
                )
            await conn.execute(
                "UPDATE conversations SET last_seq = $2 WHERE id = $1", cid, len(records)
            )
        t1 = time.perf_counter()
        indexed = await messaging.service.search.reindex(cid)
        t2 = time.perf_counter()
        assert indexed == len(bodies), indexed
        await storage.db.execute("VACUUM ANALYZE message_search")
        await storage.db.execute("VACUUM ANALYZE messages")
        return {"copy_s": round(t1 - t0, 2), "reindex_s": round(t2 - t1, 2)}
    finally:
        await storage.close()


async def sizes(settings: Settings) -> dict[str, Any]:
    composed = compose(settings)
    storage = composed.node.storage
    await storage.open(migrate=False)
    try:
        db = storage.db
        out: dict[str, Any] = {
            "index_rows": await db.fetchval("SELECT count(*) FROM message_search")
        }
        for table in ("messages", "message_search"):
            out[f"{table}_mib"] = round(
                await db.fetchval("SELECT pg_total_relation_size($1)", table) / 2**20, 1
            )
        return out
    finally:
        await storage.close()


# ------------------------------------------------------------------ the measure
async def client(url: str, settings: Settings, user: str) -> socketio.AsyncClient:
    sio = socketio.AsyncClient(reconnection=False)
    token = issue_token(settings, user, "user", 3600)
    await sio.connect(url, namespaces=[NS], auth={"token": token}, transports=["websocket"])
    return sio


async def call(sio: socketio.AsyncClient, event: str, data: dict[str, Any]) -> Any:
    ack = await sio.call(event, data, namespace=NS, timeout=60)
    if not ack["ok"]:
        raise RuntimeError(f"{event}: {ack['error']}")
    return ack["data"]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def measure_async(srv: Server, args: Any) -> dict[str, Any]:
    assert srv.datadir is not None
    settings = settings_for(srv.datadir, args)
    bodies, planted = corpus(args.messages, args.seed, args.vocab)
    live = min(args.live, len(bodies))
    alice = await client(srv.url, settings, "alice")
    cid = (await call(alice, "conversation:open", {"user_id": "bob"}))["id"]
    log(f"loading {len(bodies) - live:,} messages in bulk, then the index (Search.reindex)")
    loaded = await bulk_load(settings, cid, bodies[: len(bodies) - live])
    log(f"copied in {loaded['copy_s']}s, indexed in {loaded['reindex_s']}s")
    t = time.perf_counter()
    for i, body in enumerate(bodies[len(bodies) - live :]):
        await call(alice, "message:send", {"conversation_id": cid, "client_msg_id": f"live-{i}",
                                           "body": body})  # fmt: skip
    loaded["live_sent"] = live
    loaded["live_s"] = round(time.perf_counter() - t, 2)
    await alice.disconnect()
    table = await sizes(settings)
    log(f"{table['index_rows']:,} index rows; {table}")

    bob = await client(srv.url, settings, "bob")
    results = []
    everything: list[float] = []
    try:
        for name, text in queries(planted):
            q = Query.parse(text)
            truth = [seq for seq in range(len(bodies), 0, -1) if q.matches(bodies[seq - 1])]
            payload = {"conversation_id": cid, "query": text, "limit": LIMIT}
            page = await call(bob, "message:search", payload)  # warm-up, and the check
            got = [m["seq"] for m in page["messages"]]
            if got != truth[:LIMIT]:
                raise AssertionError(f"{name!r}: got seqs {got[:5]}..., expected {truth[:5]}...")
            took = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                await call(bob, "message:search", payload)
                took.append((time.perf_counter() - t) * 1000)
            everything += took
            results.append(
                {
                    "query": name,
                    "text": text,
                    "matches": len(truth),
                    "p50_ms": round(statistics.median(took), 2),
                    "p99_ms": round(pct(took, 0.99), 2),
                    "max_ms": round(max(took), 2),
                }
            )
            log(f"{name}: {len(truth):,} matches, p50 {results[-1]['p50_ms']} ms, "
                f"p99 {results[-1]['p99_ms']} ms")  # fmt: skip
    finally:
        await bob.disconnect()
    return {
        "messages": len(bodies),
        "load": loaded,
        "tables": table,
        "queries": results,
        "all": {
            "calls": len(everything),
            "p50_ms": round(statistics.median(everything), 2),
            "p99_ms": round(pct(everything, 0.99), 2),
        },
    }


def measure(srv: Server, args: Any) -> dict[str, Any]:
    return asyncio.run(measure_async(srv, args))


# ------------------------------------------------------------------ report
def render_md(report: dict, heading: str = "#") -> str:
    lines = common.md_head(heading, "bench/search", report)
    r = report["result"]
    if "error" in r:
        return "\n".join([*lines, f"FAILED: {r['error']}", ""])
    load, tables = r["load"], r["tables"]
    lines += [
        f"{r['messages']:,} messages in one conversation; bulk copy {load['copy_s']} s, index "
        f"build (`Search.reindex`) {load['reindex_s']} s, {load['live_sent']} sent live in "
        f"{load['live_s']} s. Index: {tables['index_rows']:,} rows, "
        f"{tables['message_search_mib']} MiB (messages: {tables['messages_mib']} MiB).",
        "",
        *common.table_head(["query", "matches", "p50 ms", "p99 ms", "max ms"]),
    ]
    for q in r["queries"]:
        lines.append(
            common.row(q["query"], common.fmt(q["matches"]), q["p50_ms"], q["p99_ms"], q["max_ms"])
        )
    a = r["all"]
    lines += [
        common.row("all", f"{a['calls']:,} calls", a["p50_ms"], a["p99_ms"], ""),
        "",
        f"Round trips of `message:search` (limit {LIMIT}) from one python-socketio client, one at"
        " a time, on the embedded PostgreSQL.",
        "",
        common.machine_md(report["machine"], "ours serve + pgserver"),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--live", type=int, default=200, help="of them sent with message:send")
    ap.add_argument("--repeat", type=int, default=200, help="round trips per query")
    ap.add_argument("--vocab", type=int, default=30_000, help="distinct words of the corpus")
    ap.add_argument("--seed", type=int, default=20)
    common.add_ours_args(ap, OURS_BENCH_ENV)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    args.python = sys.executable
    common.new_credentials(args)
    if not os.access(args.ours_bin, os.X_OK):
        ap.error(f"{args.ours_bin} not found (create the venv: see README.md)")
    common.install_cleanup()
    started, outdir, logdir = common.begin_run("search", args.out)
    machine = common.machine_info()
    result = common.measure_server(
        partial(Server, "ours", args, logdir, "search", OURS_BENCH_ENV),
        f"{args.messages:,} messages",
        partial(measure, args=args),
        {"messages": args.messages},
        starting="starting ours on",
    )
    report = {**common.report_head("search", started, args, machine), "result": result}
    common.write_reports(outdir, "search", started, report, render_md)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
