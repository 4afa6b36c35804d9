// The operator view's cluster section: polls GET /v1/admin/cluster (every node's heartbeat,
// the bus per consumer group, the scheduler, PostgreSQL and Redis) every 2 s; a table of the
// nodes with totals, and per-node charts of connections and events handled per second.

import { chartBox, lineChart, short, tile } from "./chart.js";
import { clock, fill, h } from "./dom.js";

const POLL_MS = 2000;
const KEEP = 150; // samples: five minutes

export function mountCluster(root, session, { onRefused } = {}) {
  const samples = []; // [{ts, nodes: {id: stats}}]
  let timer = null;
  let stopped = false;

  const status = h("p", { class: "note", role: "status" });
  const summary = h("div", { class: "tiles" });
  const table = h("table", { class: "nodes" });
  const deps = h("ul", { class: "deps" });
  const charts = {
    connections: chartBox("Connections per node", "node-connections"),
    events: chartBox("Events handled per second, per node", "node-events"),
    lag: chartBox("Event-loop lag per node", "node-loop-lag"),
  };
  fill(root,
    h("header", { class: "op-head" }, h("h2", {}, "Cluster"),
      h("span", { class: "muted" }, "every node's heartbeat, every 2 s (GET /v1/admin/cluster)")),
    status, summary, h("div", { class: "panel" }, table), deps,
    h("div", { class: "charts" }, Object.values(charts)));

  async function poll() {
    if (stopped) return;
    try {
      const res = await fetch("/v1/admin/cluster", {
        headers: { Authorization: `Bearer ${session.token}` },
        cache: "no-store",
      });
      const body = await res.json().catch(() => null);
      if (res.status === 401 || res.status === 403) {
        onRefused?.(body?.errors?.[0]?.message ?? "refused");
        return;
      }
      if (!res.ok || !body?.success) throw new Error(body?.errors?.[0]?.message ?? `HTTP ${res.status}`);
      const now = Date.now() / 1000;
      samples.push({ ts: now, nodes: Object.fromEntries(body.data.nodes.map((n) => [n.id, n])) });
      if (samples.length > KEEP) samples.shift();
      status.textContent = "";
      draw(body.data);
    } catch (err) {
      status.textContent = `cluster status unavailable: ${err.message}`;
      status.dataset.kind = "error";
    }
    timer = setTimeout(poll, POLL_MS);
  }

  function draw(data) {
    const t = data.totals;
    root.dataset.nodesUp = String(t.nodes_up);
    fill(summary,
      tile("nodes up", short(t.nodes_up)),
      tile("nodes gone", short(t.nodes_gone), t.nodes_gone > 0 ? "warn" : ""),
      tile("connections", short(t.connections_total)),
      tile("users", short(t.users)),
      tile("rooms", short(t.rooms)),
      tile("dead letters", short(data.bus.dead_letters), data.bus.dead_letters > 0 ? "warn" : ""),
      tile("jobs due", short(data.scheduler.due), data.scheduler.due > 0 ? "warn" : ""));

    const head = h("tr", {}, ...["node", "role", "state", "host", "started", "last seen", "connections", "rooms", "loop lag"].map((c) => h("th", {}, c)));
    const rows = data.nodes.map((n) => {
      const conns = n.stats.connections ?? {};
      const total = Object.values(conns).reduce((a, b) => a + b, 0);
      const perNs = Object.entries(conns).filter(([, c]) => c).map(([ns, c]) => `${ns} ${c}`).join(", ");
      return h("tr", { dataset: { node: n.id, state: n.state } },
        h("td", {}, h("code", {}, n.id), n.self ? h("span", { class: "muted" }, " (this node)") : null),
        h("td", {}, n.role),
        h("td", { class: `state ${n.state}` }, n.state),
        h("td", {}, n.host),
        h("td", {}, clock(n.started_at)),
        h("td", {}, `${short(n.seen_s_ago)} s ago`),
        h("td", {}, h("b", {}, String(total)), perNs ? ` (${perNs})` : ""),
        h("td", {}, String(n.stats.rooms ?? 0)),
        h("td", {}, `${short(n.stats.loop_lag_ms ?? 0)} ms`));
    });
    const totals = h("tr", { class: "totals" }, h("td", {}, "all nodes up"), h("td", {}), h("td", {}, String(t.nodes_up)),
      h("td", {}), h("td", {}), h("td", {}), h("td", {}, h("b", {}, String(t.connections_total))), h("td", {}, String(t.rooms)), h("td", {}));
    fill(table, h("thead", {}, head), h("tbody", {}, rows, totals));

    const groups = Object.entries(data.bus.groups).sort(([a], [b]) => a.localeCompare(b));
    fill(deps,
      h("li", {}, dep("PostgreSQL" + (data.postgres.embedded ? " (embedded)" : ""), data.postgres)),
      h("li", {}, data.redis.used ? dep("Redis", data.redis) : "Redis: not used (in-process bus)"),
      h("li", {}, `bus (${data.bus.backend}): `, groups.map(([g, v]) => `${g} lag ${v.lag} / pending ${v.pending}`).join(" · ")));

    const ids = [...new Set(samples.flatMap((x) => Object.keys(x.nodes)))].sort();
    const perNode = (get) => ids.map((id) => ({
      name: id, points: samples.map((x) => [x.ts, x.nodes[id]?.state === "up" ? get(x.nodes[id]) : null]),
    }));
    lineChart(charts.connections, perNode((n) => Object.values(n.stats.connections ?? {}).reduce((a, b) => a + b, 0)));
    lineChart(charts.events, ids.map((id) => ({ name: id, points: rates(id, (n) => n.stats.events_handled ?? 0) })), { unit: "/s" });
    lineChart(charts.lag, perNode((n) => n.stats.loop_lag_ms ?? 0), { unit: "ms" });
  }

  /** Per-second rate of one node's cumulative counter between consecutive samples. */
  function rates(id, get) {
    return samples.slice(1).map((b, i) => {
      const a = samples[i];
      const nb = b.nodes[id];
      const na = a.nodes[id];
      if (!nb || !na || nb.state !== "up") return [b.ts, null];
      const dv = get(nb) - get(na);
      const dt = b.ts - a.ts;
      return [b.ts, dv >= 0 && dt > 0 ? dv / dt : null];
    });
  }

  poll();
  return {
    close() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

function dep(name, d) {
  return d.ok ? `${name}: ok (${d.latency_ms} ms)` : h("span", { class: "bad" }, `${name}: DOWN — ${d.error}`);
}
