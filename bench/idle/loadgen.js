#!/usr/bin/env node
// bench/idle load generator: N idle socket.io-client connections held open.
//
// N official socket.io-client connections (websocket only, each its own HS256
// JWT {sub, role: "user", iat, exp}) are split over W worker processes; each
// connects to <url>/feed and joins the room `zone:idle` (checking the ack), then
// stays idle (only Engine.IO heartbeats flow). The coordinator then takes
// commands, one per line on stdin, and answers with JSON lines on stdout:
//
//   status     -> {"event":"status", connected, joined, disconnects, pings, ...}
//   verify K   -> K sockets spread over all workers send `room:join {room}` again
//                 and wait for the ack: {"event":"verify", asked, ok, failed, rtt_ms}
//   close      -> close every socket and exit
//
// Progress and the connect result: {"event":"progress"|"ready"|"error", ...}.
// Run `node loadgen.js --help` for options.
'use strict';

const path = require('path');
const readline = require('readline');

const common = require(path.join(__dirname, '..', 'common.js'));
const {
  nowMs, r3, addCount, mergeCounts, mintJwt, out, progress, splitEven, forkWorkers, onCoordinator, sendFatal,
  clientOptions, wsExtensionsOf, connectRange,
} = common;

function parseArgs(argv) {
  const defaults = {
    url: 'http://127.0.0.1:8080',
    namespace: '/feed',
    room: 'zone:idle',
    clients: 5000,
    workers: 4,
    jwtSecret: process.env.BENCH_JWT_SECRET || 'bench-secret',
    userPrefix: 'idle',
    connectConcurrency: 50, // per worker
    connectTimeout: 300, // s, whole connect phase
    ackTimeout: 10, // s, room:join
    clientDeflate: 'on',
  };
  const o = common.parseArgs(argv, defaults);
  common.checkClientDeflate(o);
  return o;
}

function joinAck(s, room, timeoutS) {
  const t = nowMs();
  return s.timeout(timeoutS * 1000).emitWithAck('room:join', { room }).then(
    (ack) => (ack && ack.ok === true && ack.data && ack.data.room === room
      ? { ok: true, ms: nowMs() - t }
      : { ok: false, err: 'rejected: ' + JSON.stringify(ack).slice(0, 160) }),
    () => ({ ok: false, err: 'ack timeout' }),
  );
}

// ================================================================= worker
function runWorker() {
  const { io } = require('socket.io-client');
  let cfg = null;
  const clients = []; // {s, joined}
  let disconnects = 0;
  let pings = 0;
  let wsExtensions = null;
  const disconnectReasons = {};
  const send = (m) => process.send(m);

  function connectOne(idx) {
    return new Promise((resolve) => {
      const c = { s: null, joined: false };
      let done = false;
      const finish = (ok, err) => {
        if (done) return;
        done = true;
        resolve({ c, ok, err });
      };
      const token = mintJwt(cfg.jwtSecret, `${cfg.userPrefix}-${idx}`);
      const s = io(cfg.url + cfg.namespace, clientOptions(token, 30000, cfg.clientDeflate));
      c.s = s;
      s.io.on('ping', () => { pings++; });
      s.on('connect', () => {
        if (wsExtensions === null) wsExtensions = wsExtensionsOf(s);
        joinAck(s, cfg.room, cfg.ackTimeout).then((r) => {
          if (r.ok) { c.joined = true; finish(true); } else finish(false, 'join ' + r.err);
        });
      });
      s.on('connect_error', (e) => finish(false, 'connect_error: ' + ((e && e.data && e.data.code) || (e && e.message))));
      s.on('disconnect', (reason) => {
        if (c.joined) { disconnects++; addCount(disconnectReasons, reason); }
        finish(false, 'disconnect: ' + reason);
      });
    });
  }

  async function connectAll() {
    const t = nowMs();
    const ticker = setInterval(() => send({ type: 'tick', joined: clients.filter((c) => c.joined).length }), 1000);
    const { joined, errors } = await connectRange(cfg.first, cfg.count, cfg.connectConcurrency, connectOne, clients);
    clearInterval(ticker);
    send({ type: 'ready', joined, failed: cfg.count - joined, errors, connectMs: nowMs() - t, wsExtensions, rss: process.memoryUsage().rss });
  }

  async function verify(k) {
    const live = clients.filter((c) => c.joined);
    const picks = [];
    if (k > 0 && live.length) {
      const step = live.length / Math.min(k, live.length);
      for (let j = 0; j < Math.min(k, live.length); j++) picks.push(live[Math.floor(j * step)]);
    }
    const rs = await Promise.all(picks.map((c) => (c.s.connected ? joinAck(c.s, cfg.room, cfg.ackTimeout) : Promise.resolve({ ok: false, err: 'not connected' }))));
    const errors = {};
    for (const r of rs) if (!r.ok) addCount(errors, r.err);
    send({ type: 'verified', asked: k, picked: picks.length, ok: rs.filter((r) => r.ok).length, rtts: rs.filter((r) => r.ok).map((r) => r.ms), errors });
  }

  onCoordinator({
    start(msg) {
      cfg = msg.cfg;
      connectAll().catch(sendFatal);
    },
    status() {
      send({
        type: 'status',
        connected: clients.filter((c) => c.s.connected).length,
        joined: clients.filter((c) => c.joined && c.s.connected).length,
        disconnects, disconnectReasons, pings, rss: process.memoryUsage().rss,
      });
    },
    verify(msg) {
      verify(msg.k).catch(sendFatal);
    },
    close() {
      for (const c of clients) c.s.close();
      setTimeout(() => process.exit(0), 300);
    },
  });
}

// ================================================================= coordinator
async function coordinator(o) {
  const nWorkers = Math.max(1, Math.min(o.workers, o.clients));
  const parts = splitEven(o.clients, nWorkers);
  const pool = forkWorkers(__filename, nWorkers, (w) => ({
    url: o.url, namespace: o.namespace, room: o.room, jwtSecret: o.jwtSecret, userPrefix: o.userPrefix,
    first: parts[w].first, count: parts[w].count, connectConcurrency: o.connectConcurrency, ackTimeout: o.ackTimeout,
    clientDeflate: o.clientDeflate,
  }), { tick: { joined: 0 } });
  const { workers } = pool;

  progress(`connecting ${o.clients} clients via ${nWorkers} worker(s) to ${o.url}${o.namespace}, room ${o.room}`);
  const tc = nowMs();
  const { seconds, joined, errors } = await pool.allReady(o.connectTimeout * 1000, 'connect',
    () => `connect: ${pool.total((w) => (w.ready ? w.ready.joined : w.tick.joined))}/${o.clients} joined after ${((nowMs() - tc) / 1000).toFixed(0)}s`);
  out({
    event: 'ready', clients: o.clients, workers: nWorkers, joined, failed: o.clients - joined, errors,
    connect_s: r3(seconds), ws_extensions: workers.map((w) => w.ready.wsExtensions).find((x) => x !== null) ?? null,
    worker_rss_mib: workers.map((w) => Math.round(w.ready.rss / 2 ** 20)),
  });

  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === 'status') {
      for (const w of workers) w.status = null;
      pool.send({ type: 'status' });
      await pool.waitFor(() => workers.every((w) => w.status), 30000, 'status');
      const s = { event: 'status', connected: 0, joined: 0, disconnects: 0, pings: 0, disconnect_reasons: {}, worker_rss_mib: [] };
      for (const w of workers) {
        s.connected += w.status.connected; s.joined += w.status.joined;
        s.disconnects += w.status.disconnects; s.pings += w.status.pings;
        mergeCounts(s.disconnect_reasons, w.status.disconnectReasons);
        s.worker_rss_mib.push(Math.round(w.status.rss / 2 ** 20));
      }
      out(s);
    } else if (cmd === 'verify') {
      const k = Math.max(0, parseInt(arg || '100', 10));
      const t = nowMs();
      const shares = splitEven(k, nWorkers);
      workers.forEach((w, i) => {
        w.verified = null;
        w.child.send({ type: 'verify', k: shares[i].count });
      });
      await pool.waitFor(() => workers.every((w) => w.verified), (o.ackTimeout + 20) * 1000, 'verify');
      const rtts = [];
      const verrors = {};
      let ok = 0, picked = 0;
      for (const w of workers) {
        ok += w.verified.ok; picked += w.verified.picked; rtts.push(...w.verified.rtts);
        mergeCounts(verrors, w.verified.errors);
      }
      rtts.sort((a, b) => a - b);
      const pct = (p) => (rtts.length ? r3(rtts[Math.min(rtts.length - 1, Math.ceil(rtts.length * p) - 1)]) : null);
      out({
        event: 'verify', asked: k, picked, ok, failed: picked - ok, errors: verrors, wall_ms: r3(nowMs() - t),
        rtt_ms: { p50: pct(0.5), p99: pct(0.99), max: rtts.length ? r3(rtts[rtts.length - 1]) : null },
      });
    } else if (cmd === 'close') {
      break;
    } else if (cmd) {
      out({ event: 'progress', msg: `unknown command ${cmd}` });
    }
  }
  await pool.close(1000);
}

common.runMain(parseArgs(process.argv.slice(2)), runWorker, coordinator);
