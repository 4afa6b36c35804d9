#!/usr/bin/env node
// bench/cluster load generator: M light `ws` clients (Engine.IO 4 / Socket.IO 5 spoken by hand,
// as bench/fanout's `--client raw`) spread over N nodes and R rooms on /feed, and a publisher
// POSTing ~200-byte `content.created` events at a fixed rate, event k to room k % R through
// node k % N. Two layouts (--layout):
//   spread  client i on node i % N, in room floor(i / N) % R: every room has sockets on every
//           node (each node needs every room's events)
//   local   client i in room i % R, on node (i % R) % N: each room's sockets all on one node
//           (with per-room channels a node hears only its own rooms)
// Latency = receive time - scheduled publish time (carried in payload.title as
// "t=<ms>;s=<seq>;..."), both this machine's clock. Output: JSON lines on stdout
// ({"event": "progress"|"phase"|"result"}), read by run.py.
'use strict';

const http = require('http');
const path = require('path');

const common = require(path.join(__dirname, '..', 'common.js'));
const {
  nowMs, sleep, r3, addCount, mergeCounts, hNew, hAdd, hToJSON, hMerge, hSummary, mintJwt, out,
  progress, splitEven, forkWorkers, onCoordinator, sendFatal, connectRange, loadMeter, loadgenStats,
} = common;

function parseArgs(argv) {
  const o = common.parseArgs(argv, {
    urls: 'http://127.0.0.1:8080', // comma list: one per node
    layout: 'spread',
    clients: 200,
    rooms: 20,
    workers: 2,
    rate: 100, // events/s, all rooms together
    duration: 10,
    payloadBytes: 200,
    apiKey: process.env.BENCH_API_KEY || 'bench-key',
    jwtSecret: process.env.BENCH_JWT_SECRET || 'bench-secret',
    connectConcurrency: 50,
    connectTimeout: 60,
    drainIdle: 3,
    drainMax: 30,
  }, 'usage: node loadgen.js');
  if (!['spread', 'local'].includes(o.layout)) throw new Error('--layout must be spread or local');
  o.urls = o.urls.split(',').filter(Boolean);
  return o;
}

// node index and room of client i
function placement(i, o) {
  const n = o.urls.length;
  if (o.layout === 'spread') return { node: i % n, room: Math.floor(i / n) % o.rooms };
  const room = i % o.rooms;
  return { node: room % n, room };
}
const roomName = (r) => `zone:bench${r}`;

// ================================================================= worker
function runWorker() {
  const WebSocket = require('ws');
  const TITLE = Buffer.from('"title":"');
  let cfg = null;
  const clients = [];
  let measuring = false;
  let lastRecv = 0;
  let delivered = 0;
  let warmup = 0;
  let disconnects = 0;
  const perNode = {};
  const disconnectReasons = {};
  const hist = hNew();
  const meter = loadMeter();

  function numberAt(buf, i) {
    let v = 0, frac = 0, scale = 1;
    for (; i < buf.length; i++) {
      const ch = buf[i];
      if (ch >= 48 && ch <= 57) {
        if (frac) { scale /= 10; v += (ch - 48) * scale; } else v = v * 10 + (ch - 48);
      } else if (ch === 46 && !frac) frac = 1;
      else break;
    }
    return [v, i];
  }

  function onEvent(c, buf) {
    const at = buf.indexOf(TITLE, 8);
    if (at < 0) return;
    const p = at + TITLE.length;
    if (buf[p] !== 116 /* t */ || !measuring) { warmup++; return; }
    const now = nowMs();
    const [sent] = numberAt(buf, p + 2);
    c.got++;
    delivered++;
    addCount(perNode, c.node);
    hAdd(hist, now - sent);
    lastRecv = now;
  }

  function connectOne(idx) {
    return new Promise((resolve) => {
      const { node, room } = placement(idx, cfg);
      const c = { idx, node, room, got: 0, joined: false, ws: null };
      const token = mintJwt(cfg.jwtSecret, 100000 + idx);
      const prefix = '/feed,';
      let done = false;
      const finish = (ok, err) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve({ c, ok, err });
      };
      const u = new URL(cfg.urls[node]);
      const ws = new WebSocket(
        `ws://${u.host}/socket.io/?EIO=4&transport=websocket&token=${encodeURIComponent(token)}`,
        { perMessageDeflate: false, skipUTF8Validation: true },
      );
      c.ws = ws;
      const timer = setTimeout(() => { finish(false, 'connect/join timeout'); ws.terminate(); }, 20000);
      ws.on('message', (buf) => {
        if (buf[0] === 52 /* 4 */) {
          const b1 = buf[1];
          if (b1 === 50 /* 2: event */) onEvent(c, buf);
          else if (b1 === 48 /* 0: connect */) {
            ws.send(`42${prefix}1${JSON.stringify(['room:join', { room: roomName(room) }])}`);
          } else if (b1 === 51 /* 3: ack */) {
            const ok = buf.toString('utf8').includes('"ok":true');
            c.joined = ok;
            finish(ok, ok ? null : 'join rejected: ' + buf.toString('utf8').slice(0, 200));
          } else if (b1 === 52 /* 4: connect_error */) {
            finish(false, 'connect_error: ' + buf.toString('utf8').slice(0, 200));
          }
        } else if (buf[0] === 50 /* 2: ping */) ws.send('3');
        else if (buf[0] === 48 /* 0: open */) ws.send(`40${prefix}${JSON.stringify({ token })}`);
      });
      ws.on('error', (e) => finish(false, 'ws error: ' + (e && e.message)));
      ws.on('close', (code) => {
        if (c.joined) { disconnects++; addCount(disconnectReasons, `close ${code}`); }
        c.joined = false;
        finish(false, 'closed: ' + code);
      });
    });
  }

  let tick = null;
  function drain(msg) {
    const started = nowMs();
    const check = () => {
      const now = nowMs();
      const complete = clients.every((c) => !c.joined || c.got >= msg.acceptedByRoom[c.room]);
      const idle = now - Math.max(lastRecv, started) > cfg.drainIdle * 1000;
      if (!complete && !idle && now - started < cfg.drainMax * 1000) return;
      clearInterval(tick);
      let expected = 0;
      for (const c of clients) if (c.joined) expected += msg.acceptedByRoom[c.room];
      process.send({
        type: 'result', delivered, expected, perNode, warmup, disconnects, disconnectReasons,
        joined: clients.filter((c) => c.joined).length, lastRecv, hist: hToJSON(hist),
        drainEnd: complete ? 'complete' : idle ? 'idle' : 'timeout', ...meter.read(),
      });
    };
    tick = setInterval(check, 100);
  }

  onCoordinator({
    start(msg) {
      cfg = msg.cfg;
      const t = nowMs();
      connectRange(cfg.first, cfg.count, cfg.connectConcurrency, connectOne, clients)
        .then(({ joined, errors }) => process.send({ type: 'ready', joined, errors, connectMs: nowMs() - t }))
        .catch(sendFatal);
    },
    pubstart() {
      measuring = true;
      meter.start();
      tick = setInterval(() => process.send({ type: 'tick', delivered }), 1000);
    },
    pubend(msg) { clearInterval(tick); drain(msg); },
    close() {
      for (const c of clients) if (c.ws) c.ws.close();
      setTimeout(() => process.exit(0), 200);
    },
  });
}

// ================================================================= coordinator
function poster(o) {
  const agents = o.urls.map(() => new http.Agent({ keepAlive: true, maxSockets: 64 }));
  const base = JSON.stringify({ content_id: 'c1', kind: 'post', title: '' }).length;
  const pad = 'x'.repeat(Math.max(24, o.payloadBytes - base));
  return {
    agents,
    post(node, room, prefix) {
      const body = JSON.stringify({
        type: 'content.created',
        subjects: [roomName(room)],
        payload: { content_id: 'c1', kind: 'post', title: (prefix + pad).slice(0, Math.max(pad.length, prefix.length)) },
      });
      const u = new URL(o.urls[node]);
      return new Promise((resolve) => {
        const req = http.request({
          host: u.hostname, port: u.port, path: '/v1/events', method: 'POST', agent: agents[node],
          headers: {
            'content-type': 'application/json', 'content-length': Buffer.byteLength(body),
            authorization: `Bearer ${o.apiKey}`,
          },
          timeout: 30000,
        }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
        req.on('timeout', () => req.destroy(new Error('timeout')));
        req.on('error', () => resolve(0));
        req.end(body);
      });
    },
  };
}

async function coordinator(o) {
  const pub = poster(o);
  const nWorkers = Math.max(1, Math.min(o.workers, o.clients));
  const parts = splitEven(o.clients, nWorkers);
  const pool = forkWorkers(__filename, nWorkers, (w) => ({
    urls: o.urls, layout: o.layout, rooms: o.rooms, jwtSecret: o.jwtSecret, first: parts[w].first,
    count: parts[w].count, connectConcurrency: o.connectConcurrency, drainIdle: o.drainIdle,
    drainMax: o.drainMax,
  }), { tick: { delivered: 0 } });
  progress(`connecting ${o.clients} clients to ${o.urls.length} node(s), ${o.rooms} rooms, layout ${o.layout}`);
  const { seconds, joined, errors } = await pool.allReady(o.connectTimeout * 1000, 'connect');
  progress(`joined ${joined}/${o.clients} in ${seconds.toFixed(1)}s`, { errors });
  if (joined === 0) throw new Error('no client joined: ' + JSON.stringify(errors));

  for (let r = 0; r < o.rooms; r++) await pub.post(r % o.urls.length, r, 'w;'); // warm every room
  await sleep(500);

  const acceptedByRoom = new Array(o.rooms).fill(0);
  const statuses = {};
  const pending = [];
  const { t0 } = await pool.startAt(200, 'pubstart', o.duration, 'publish_start');
  const cpu0 = process.cpuUsage();
  const n = Math.round(o.rate * o.duration);
  const interval = 1000 / o.rate;
  for (let k = 0; k < n;) {
    const now = nowMs();
    while (k < n && t0 + k * interval <= now) {
      const room = k % o.rooms;
      const due = t0 + k * interval;
      pending.push(pub.post(k % o.urls.length, room, `t=${due.toFixed(3)};s=${k};`).then((s) => {
        addCount(statuses, s);
        if (s === 202) acceptedByRoom[room]++;
      }));
      k++;
    }
    const wait = t0 + k * interval - nowMs();
    if (k < n) await sleep(Math.max(0, Math.floor(wait)));
  }
  await Promise.all(pending);
  const pubEnd = nowMs();
  const cpu = process.cpuUsage(cpu0);
  out({ event: 'phase', phase: 'publish_end', t: pubEnd });
  pool.send({ type: 'pubend', acceptedByRoom });
  await pool.waitFor(() => pool.workers.every((w) => w.result), (o.drainMax + 15) * 1000, 'drain');
  out({ event: 'phase', phase: 'drain_end', t: nowMs() });

  const hist = hNew();
  let delivered = 0, expected = 0, lastRecv = 0, disconnects = 0, joinedEnd = 0;
  const perNode = {};
  const reasons = {};
  const drainEnds = {};
  const results = pool.workers.map((w) => w.result);
  for (const r of results) {
    hMerge(hist, r.hist);
    delivered += r.delivered;
    expected += r.expected;
    disconnects += r.disconnects;
    joinedEnd += r.joined;
    lastRecv = Math.max(lastRecv, r.lastRecv);
    mergeCounts(perNode, r.perNode);
    mergeCounts(reasons, r.disconnectReasons);
    addCount(drainEnds, r.drainEnd);
  }
  const spanS = lastRecv > t0 ? (lastRecv - t0) / 1000 : null;
  out({
    event: 'result',
    layout: o.layout, nodes: o.urls.length, clients: o.clients, joined, joined_at_end: joinedEnd,
    rooms: o.rooms, rate: o.rate, duration_s: o.duration,
    published: n, accepted: acceptedByRoom.reduce((a, b) => a + b, 0), statuses,
    expected, delivered, lost: Math.max(0, expected - delivered),
    deliveries_per_s: spanS ? Math.round(delivered / spanS) : null,
    publish_window_s: r3((pubEnd - t0) / 1000), delivery_span_s: r3(spanS),
    latency_ms: hSummary(hist), deliveries_per_node: perNode,
    disconnects, disconnect_reasons: reasons, drain_end: drainEnds,
    loadgen: loadgenStats(cpu, results),
  });
  await pool.close(500);
  for (const a of pub.agents) a.destroy();
}

common.runMain(parseArgs(process.argv.slice(2)), runWorker, coordinator);
