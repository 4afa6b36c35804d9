// The operator view: the cluster (every node, cluster.js) on top, then this node's Prometheus
// numbers from GET /v1/admin/metrics/summary, polled every 2 s and drawn over time. Needs an
// admin token (ours token --user ops --role admin).

import { chartBox, lineChart, short, tile } from "./chart.js";
import { mountCluster } from "./cluster.js";
import { fill, h } from "./dom.js";

const POLL_MS = 2000;
const KEEP = 150; // samples: five minutes
const TOP_TYPES = 6;

export function mountOperator(root, session) {
  const samples = [];
  let timer = null;
  let stopped = false;

  const status = h("p", { class: "note", role: "status" });
  const tiles = h("div", { class: "tiles" });
  const charts = {
    connections: chartBox("Connections per namespace", "connections"),
    events: chartBox("Events per second, by type", "events"),
    latency: chartBox("Fan-out latency (publish → emit)", "latency"),
    sockets: chartBox("Client socket events per second", "sockets"),
    lag: chartBox("Consumer lag (events not yet handled)", "lag"),
    dlq: chartBox("Dead letters", "dlq"),
  };
  const adminUi = h("div", { class: "panel admin-ui" });
  const clusterBox = h("section", { id: "cluster" });
  fill(root,
    clusterBox,
    h("header", { class: "op-head" }, h("h2", {}, "This node"),
      h("span", { class: "muted" }, "the node serving this page, every 2 s (numbers from /metrics)")),
    status, tiles,
    h("div", { class: "charts" }, Object.values(charts)),
    adminUi);

  async function poll() {
    if (stopped) return;
    try {
      const res = await fetch("/v1/admin/metrics/summary", {
        headers: { Authorization: `Bearer ${session.token}` },
        cache: "no-store",
      });
      const body = await res.json().catch(() => null);
      if (res.status === 401 || res.status === 403) {
        status.textContent = `${body?.errors?.[0]?.message ?? "refused"} — the operator view needs an admin token: ours token --user ops --role admin`;
        status.dataset.kind = "error";
        return; // no more polling with this token
      }
      if (!res.ok || !body?.success) throw new Error(body?.errors?.[0]?.message ?? `HTTP ${res.status}`);
      samples.push(body.data);
      if (samples.length > KEEP) samples.shift();
      status.textContent = "";
      draw();
    } catch (err) {
      status.textContent = `metrics unavailable: ${err.message}`;
      status.dataset.kind = "error";
    }
    timer = setTimeout(poll, POLL_MS);
  }

  function draw() {
    const last = samples[samples.length - 1];
    root.dataset.samples = String(samples.length);
    const totalConns = Object.values(last.connections).reduce((a, b) => a + b, 0);
    const handled = sum(last.events.by_type);
    fill(tiles,
      tile("uptime", `${short(last.node.uptime_s)}s`),
      tile("connections", short(totalConns)),
      tile("events", short(handled)),
      tile("via POST /v1/events", short(sum(last.events.published))),
      tile("duplicates", short(last.events.duplicates)),
      tile("room fan-outs", short(last.fanout_latency.count)),
      tile("dead letters", short(last.dead_letters), last.dead_letters > 0 ? "warn" : ""),
      tile("socket errors", short(last.socket_events.errors)));

    lineChart(charts.connections, keys(last.connections).map((ns) => ({
      name: ns, points: samples.map((x) => [x.ts, x.connections[ns] ?? 0]),
    })));

    const types = keys(last.events.by_type)
      .sort((a, b) => last.events.by_type[b] - last.events.by_type[a]).slice(0, TOP_TYPES);
    lineChart(charts.events, types.map((t) => ({ name: t, points: rates((x) => x.events.by_type[t] ?? 0) })), { unit: "/s" });

    lineChart(charts.latency, [
      { name: "p50", points: latency(0.5) },
      { name: "p95", points: latency(0.95) },
      { name: "p99", points: latency(0.99) },
    ], { unit: "ms" });

    lineChart(charts.sockets, [
      { name: "handled", points: rates((x) => sum(x.socket_events.by_event)) },
      { name: "refused or failed", points: rates((x) => x.socket_events.errors) },
    ], { unit: "/s" });

    lineChart(charts.lag, keys(last.consumer_lag).map((g) => ({
      name: g, points: samples.map((x) => [x.ts, x.consumer_lag[g] ?? null]),
    })));
    lineChart(charts.dlq, [{ name: "dead letters", points: samples.map((x) => [x.ts, x.dead_letters]) }]);

    fill(adminUi,
      h("h3", {}, "Socket.IO Admin UI"),
      last.node.admin_ui
        ? h("p", {}, "Enabled on namespace ", h("code", {}, "/admin"), ". Open the Socket.IO Admin UI (admin.socket.io, or its ui/dist files hosted yourself), server URL ",
            h("code", {}, location.origin), ", path ", h("code", {}, "/socket.io"), ", username ", h("code", {}, "admin"),
            " and the password in OURS_ADMIN_UI_PASSWORD. Allow its origin in OURS_CORS_ORIGINS.")
        : h("p", { class: "muted" }, "Off. Set OURS_ADMIN_UI_PASSWORD (and OURS_ADMIN_UI_MODE=development for per-socket detail) and restart to enable it."));
  }

  /** Per-second rate of a cumulative counter between consecutive samples (null on reset). */
  function rates(get) {
    return samples.slice(1).map((b, i) => {
      const a = samples[i];
      const dv = get(b) - get(a);
      const dt = b.ts - a.ts;
      return [b.ts, dv >= 0 && dt > 0 ? dv / dt : null];
    });
  }

  /** Quantile (ms) of the fan-outs observed between consecutive samples, as PromQL does it. */
  function latency(q) {
    return samples.slice(1).map((b, i) => {
      const a = samples[i].fanout_latency.buckets;
      const delta = b.fanout_latency.buckets.map(([le, n], j) => [le, n - (a[j]?.[1] ?? 0)]);
      const v = quantile(delta, q);
      return [b.ts, v === null ? null : v * 1000];
    });
  }

  const cluster = mountCluster(clusterBox, session);
  poll();
  return {
    close() {
      stopped = true;
      clearTimeout(timer);
      cluster.close();
    },
  };
}

/** Histogram quantile from cumulative [le|null(+Inf), count] buckets; null without samples. */
export function quantile(buckets, q) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!(total > 0)) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevN = 0;
  for (const [le, n] of buckets) {
    if (n >= rank) {
      if (le === null) return prevLe; // in +Inf: the highest finite bound is all we know
      return prevLe + (le - prevLe) * ((rank - prevN) / Math.max(1e-12, n - prevN));
    }
    prevLe = le ?? prevLe;
    prevN = n;
  }
  return prevLe;
}


const keys = (o) => Object.keys(o ?? {}).sort();
const sum = (o) => Object.values(o ?? {}).reduce((a, b) => a + b, 0);
