"""bench/messages database check: what the run left in the server's database.

Run by run.py with the project's Python while the server is still up (it attaches to the same
embedded PostgreSQL in OURS_DATA_DIR). Reads on stdin {"conversations": [{"id", "acked": [i,
...]}]} (from the load generator: the messages acked in each conversation) and prints one JSON
object: per conversation the messages' seqs must be exactly 1..n (gap-free, no repeats) with
the conversation's `last_seq` = n, one row per (sender, client_msg_id), and every acked message
(client_msg_id `m<i>`) in it.

    OURS_DATA_DIR=... python bench/messages/dbcheck.py < expected.json
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import asyncpg

from server import embedded_pg


async def check(data_dir: Path, conversations: list[dict]) -> dict:
    dsn, handle = await embedded_pg.start(data_dir)
    conn = await asyncpg.connect(dsn)
    try:
        ids = [c["id"] for c in conversations]
        rows = await conn.fetch(
            "SELECT g.conversation_id::text AS id, count(*) AS n, min(g.seq) AS lo,"
            " max(g.seq) AS hi, count(DISTINCT g.seq) AS seqs,"
            " count(DISTINCT (g.sender_id, g.client_msg_id)) AS client_ids,"
            " array_agg(g.client_msg_id) AS cmids, max(c.last_seq) AS last_seq"
            " FROM messages g JOIN conversations c ON c.id = g.conversation_id"
            " WHERE g.conversation_id = ANY($1::uuid[]) GROUP BY g.conversation_id",
            ids,
        )
    finally:
        await conn.close()
        await embedded_pg.stop(handle)
    by_id = {r["id"]: r for r in rows}
    out = {
        "conversations_checked": len(conversations),
        "rows": sum(r["n"] for r in rows),
        "conversations_without_rows": 0,
        "conversations_with_seq_gaps": 0,
        "last_seq_mismatch": 0,
        "duplicate_client_msg_ids": 0,
        "acked_missing_in_db": 0,
        "rows_not_acked": 0,
    }
    for c in conversations:
        r = by_id.get(c["id"])
        if r is None:
            out["conversations_without_rows"] += 1
            out["acked_missing_in_db"] += len(c["acked"])
            continue
        if not (r["lo"] == 1 and r["hi"] == r["n"] == r["seqs"]):
            out["conversations_with_seq_gaps"] += 1
        if r["last_seq"] != r["hi"]:
            out["last_seq_mismatch"] += 1
        out["duplicate_client_msg_ids"] += r["n"] - r["client_ids"]
        have = set(r["cmids"])
        acked = {f"m{i}" for i in c["acked"]}
        out["acked_missing_in_db"] += len(acked - have)
        out["rows_not_acked"] += len({x for x in have if x.startswith("m")} - acked)
    out["ok"] = (
        out["conversations_without_rows"] == 0
        and out["conversations_with_seq_gaps"] == 0
        and out["last_seq_mismatch"] == 0
        and out["duplicate_client_msg_ids"] == 0
        and out["acked_missing_in_db"] == 0
    )
    return out


def main() -> int:
    expected = json.load(sys.stdin)
    result = asyncio.run(check(Path(os.environ["OURS_DATA_DIR"]), expected["conversations"]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
