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

const { fork } = require('child_process');
const path = require('path');
const readline = require('readline');

const common = require(path.join(__dirname, '..', 'common.js'));
const { nowMs, sleep, r3, addCount, mintJwt, out, progress, killWorkersOnExit } = common;

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
  const map = {
    '--url': ['url', String], '--namespace': ['namespace', String], '--room': ['room', String],
    '--clients': ['clients', Number], '--workers': ['workers', Number], '--jwt-secret': ['jwtSecret', String],
    '--user-prefix': ['userPrefix', String], '--connect-concurrency': ['connectConcurrency', Number],
    '--connect-timeout': ['connectTimeout', Number], '--ack-timeout': ['ackTimeout', Number],
    '--client-deflate': ['clientDeflate', String],
  };
  const o = common.parseArgs(argv, defaults, map);
  if (!['on', 'off'].includes(o.clientDeflate)) throw new Error('--client-deflate must be on or off');
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
      const s = io(cfg.url + cfg.namespace, {
        forceNew: true,
        multiplex: false,
        transports: ['websocket'],
        auth: { token: mintJwt(cfg.jwtSecret, `${cfg.userPrefix}-${idx}`) },
        reconnection: false,
        timeout: 30000,
        ...(cfg.clientDeflate === 'off' ? { perMessageDeflate: false } : {}),
      });
      c.s = s;
      s.io.on('ping', () => { pings++; });
      s.on('connect', () => {
        if (wsExtensions === null) {
          try { wsExtensions = s.io.engine.transport.ws.extensions || ''; } catch (_) { wsExtensions = '?'; }
        }
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
    const errors = {};
    let joined = 0;
    let next = cfg.first;
    const end = cfg.first + cfg.count;
    const ticker = setInterval(() => send({ type: 'tick', joined }), 1000);
    const lane = async () => {
      while (next < end) {
        const r = await connectOne(next++);
        clients.push(r.c);
        if (r.ok) joined++;
        else addCount(errors, r.err);
      }
    };
    const lanes = [];
    for (let i = 0; i < Math.min(cfg.connectConcurrency, cfg.count); i++) lanes.push(lane());
    await Promise.all(lanes);
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

  process.on('message', (msg) => {
    if (msg.type === 'start') {
      cfg = msg.cfg;
      connectAll().catch((e) => send({ type: 'fatal', error: String(e && e.stack) }));
    } else if (msg.type === 'status') {
      send({
        type: 'status',
        connected: clients.filter((c) => c.s.connected).length,
        joined: clients.filter((c) => c.joined && c.s.connected).length,
        disconnects, disconnectReasons, pings, rss: process.memoryUsage().rss,
      });
    } else if (msg.type === 'verify') {
      verify(msg.k).catch((e) => send({ type: 'fatal', error: String(e && e.stack) }));
    } else if (msg.type === 'close') {
      for (const c of clients) c.s.close();
      setTimeout(() => process.exit(0), 300);
    }
  });
  process.on('disconnect', () => process.exit(0)); // parent died
}

// ================================================================= coordinator
async function coordinator(o) {
  const nWorkers = Math.max(1, Math.min(o.workers, o.clients));
  const workers = [];
  const per = Math.floor(o.clients / nWorkers);
  let first = 0;
  for (let w = 0; w < nWorkers; w++) {
    const count = per + (w < o.clients % nWorkers ? 1 : 0);
    const child = fork(__filename, ['--worker'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const wk = { child, count, ready: null, joined: 0, status: null, verified: null, exited: false };
    child.on('message', (m) => {
      if (m.type === 'ready') wk.ready = m;
      else if (m.type === 'tick') wk.joined = m.joined;
      else if (m.type === 'status') wk.status = m;
      else if (m.type === 'verified') wk.verified = m;
      else if (m.type === 'fatal') wk.fatal = m.error;
    });
    child.on('exit', () => { wk.exited = true; });
    child.send({
      type: 'start',
      cfg: {
        url: o.url, namespace: o.namespace, room: o.room, jwtSecret: o.jwtSecret, userPrefix: o.userPrefix,
        first, count, connectConcurrency: o.connectConcurrency, ackTimeout: o.ackTimeout, clientDeflate: o.clientDeflate,
      },
    });
    first += count;
    workers.push(wk);
  }
  const killAll = killWorkersOnExit(workers);

  const waitFor = async (pred, timeoutMs, what, every) => {
    const t = Date.now();
    let lastLog = t;
    while (!pred()) {
      for (const w of workers) if (w.fatal) throw new Error('worker failed: ' + w.fatal);
      if (workers.some((w) => w.exited)) throw new Error(`a worker exited during ${what}`);
      if (Date.now() - t > timeoutMs) throw new Error(`timeout during ${what}`);
      if (every && Date.now() - lastLog > 2000) { lastLog = Date.now(); progress(every()); }
      await sleep(50);
    }
  };

  progress(`connecting ${o.clients} clients via ${nWorkers} worker(s) to ${o.url}${o.namespace}, room ${o.room}`);
  const tc = nowMs();
  await waitFor(() => workers.every((w) => w.ready), o.connectTimeout * 1000, 'connect',
    () => `connect: ${workers.reduce((a, w) => a + (w.ready ? w.ready.joined : w.joined), 0)}/${o.clients} joined after ${((nowMs() - tc) / 1000).toFixed(0)}s`);
  const errors = {};
  for (const w of workers) for (const [k, v] of Object.entries(w.ready.errors)) addCount(errors, k, v);
  const joined = workers.reduce((a, w) => a + w.ready.joined, 0);
  out({
    event: 'ready', clients: o.clients, workers: nWorkers, joined, failed: o.clients - joined, errors,
    connect_s: r3((nowMs() - tc) / 1000), ws_extensions: workers.map((w) => w.ready.wsExtensions).find((x) => x !== null) ?? null,
    worker_rss_mib: workers.map((w) => Math.round(w.ready.rss / 2 ** 20)),
  });

  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === 'status') {
      for (const w of workers) { w.status = null; w.child.send({ type: 'status' }); }
      await waitFor(() => workers.every((w) => w.status), 30000, 'status');
      const s = { event: 'status', connected: 0, joined: 0, disconnects: 0, pings: 0, disconnect_reasons: {}, worker_rss_mib: [] };
      for (const w of workers) {
        s.connected += w.status.connected; s.joined += w.status.joined;
        s.disconnects += w.status.disconnects; s.pings += w.status.pings;
        for (const [k, v] of Object.entries(w.status.disconnectReasons)) addCount(s.disconnect_reasons, k, v);
        s.worker_rss_mib.push(Math.round(w.status.rss / 2 ** 20));
      }
      out(s);
    } else if (cmd === 'verify') {
      const k = Math.max(0, parseInt(arg || '100', 10));
      const t = nowMs();
      workers.forEach((w, i) => {
        w.verified = null;
        w.child.send({ type: 'verify', k: Math.floor(k / nWorkers) + (i < k % nWorkers ? 1 : 0) });
      });
      await waitFor(() => workers.every((w) => w.verified), (o.ackTimeout + 20) * 1000, 'verify');
      const rtts = [];
      const verrors = {};
      let ok = 0, picked = 0;
      for (const w of workers) {
        ok += w.verified.ok; picked += w.verified.picked; rtts.push(...w.verified.rtts);
        for (const [kk, v] of Object.entries(w.verified.errors)) addCount(verrors, kk, v);
      }
      rtts.sort((a, b) => a - b);
      const pct = (p) => (rtts.length ? r3(rtts[Math.min(rtts.length - 1, Math.ceil(rtts.length * p) - 1)]) : null);
      out({
        event: 'verify', asked: k, picked, ok, failed: picked - ok, errors: verrors, wall_ms: r3(nowMs() - t),
        rtt_ms: { p50: pct(0.5), p99: pct(0.99), max: rtts.length ? r3(rtts[rtts.length - 1]) : null },
      });
    } else if (cmd === 'close') {
      for (const w of workers) if (!w.exited) w.child.send({ type: 'close' });
      await sleep(1000);
      break;
    } else if (cmd) {
      out({ event: 'progress', msg: `unknown command ${cmd}` });
    }
  }
  killAll();
}

const opts = parseArgs(process.argv.slice(2));
if (opts.worker) {
  runWorker();
} else {
  coordinator(opts).then(
    () => process.exit(0),
    (e) => {
      out({ event: 'error', error: String(e && e.message), stack: String(e && e.stack) });
      process.exit(1);
    },
  );
}
