#!/usr/bin/env node
// bench/fanout load generator.
//
// M socket.io-client connections (split over N worker processes) join one room
// on namespace /feed; the coordinator process publishes ~200-byte events with
// `POST /v1/events` (keep-alive agent) for D seconds, either at a fixed rate R
// (open loop: event i is due at t0 + i/R whatever the server does) or, in
// saturate mode, as fast as the server accepts them (closed loop, K requests in
// flight) or at a given high rate.
//
// Latency = client receive time - publish time, both from this machine's
// wall clock (performance.timeOrigin + performance.now(), sub-millisecond).
// The publish time travels inside payload.title ("t=<ms>;s=<seq>;xxx..."), so
// nothing depends on the server's own `ts`. In fixed-rate mode the publish
// time is the *scheduled* time (so a slow publish path counts against the
// server, no coordinated omission); in closed-loop mode it is the time the
// request was written.
//
// Output: JSON lines on stdout ({"event":"progress"|"phase"|"result", ...}).
// Run `node loadgen.js --help` for options.
'use strict';

const http = require('http');
const path = require('path');

const common = require(path.join(__dirname, '..', 'common.js'));
const {
  nowMs, sleep, r3, addCount, mergeCounts, countAt, sumTimelines, hNew, hAdd, hToJSON, hMerge, hSummary,
  mintJwt, out, progress, splitEven, forkWorkers, loadgenStats, onCoordinator, sendFatal, clientOptions,
  wsExtensionsOf, connectRange, loadMeter,
} = common;

// ---------------------------------------------------------------- args
function parseArgs(argv) {
  const defaults = {
    url: 'http://127.0.0.1:8080',
    namespace: '/feed',
    room: 'zone:bench',
    clients: 100,
    workers: 2,
    mode: 'rate', // rate | saturate
    rate: 10, // events/s; in saturate mode 0 = closed loop
    concurrency: 8, // in-flight POSTs in closed-loop saturate mode
    maxInflight: 64, // keep-alive sockets; in saturate@rate mode a slot is skipped when all are busy
    duration: 10,
    warmup: 1,
    payloadBytes: 200,
    apiKey: process.env.BENCH_API_KEY || 'bench-key',
    jwtSecret: process.env.BENCH_JWT_SECRET || 'bench-secret',
    connectConcurrency: 50, // per worker
    connectTimeout: 60, // s, whole connect phase
    drainIdle: 3, // s without any delivery after publishing ends => done
    drainMax: 30, // s after publishing ends => give up, rest is lost
    label: '',
    eventType: 'content.created',
    clientDeflate: 'on', // on: offer permessage-deflate like browsers and socket.io-client do
    client: 'io', // io: socket.io-client; raw: `ws` sockets speaking Engine.IO 4 / Socket.IO 5 by hand
  };
  const o = common.parseArgs(argv, defaults);
  common.checkClientDeflate(o);
  if (!['rate', 'saturate'].includes(o.mode)) throw new Error('--mode must be rate or saturate');
  if (!['io', 'raw'].includes(o.client)) throw new Error('--client must be io or raw');
  if (o.mode === 'rate' && !(o.rate > 0)) throw new Error('--rate must be > 0 in rate mode');
  return o;
}

// ================================================================= worker
function runWorker() {
  const { io } = require('socket.io-client');
  let cfg = null;
  const clients = []; // {socket, seen: Uint8Array, got, joined}
  let t0 = 0; // publish start (ms epoch)
  let tEnd = 0; // planned publish end
  let measuring = false;
  const hist = hNew();
  let received = 0; // all measured deliveries (incl. duplicates)
  let unique = 0;
  let dups = 0;
  let inWindow = 0;
  let firstRecv = 0;
  let lastRecv = 0;
  let envelopeBytes = null;
  let wsExtensions = null; // negotiated websocket extensions (permessage-deflate?)
  let badEnvelope = 0;
  let warmupRecv = 0;
  let disconnects = 0;
  const disconnectReasons = {};
  const timeline = [];
  const meter = loadMeter();

  const send = (m) => process.send(m);

  function onEvent(c, env) {
    const now = nowMs();
    const title = env && env.payload && env.payload.title;
    if (typeof title !== 'string') { badEnvelope++; return; }
    if (title.charCodeAt(0) !== 116 /* t */) { warmupRecv++; return; }
    if (!measuring) { warmupRecv++; return; }
    const semi = title.indexOf(';', 2);
    const sent = +title.slice(2, semi);
    const semi2 = title.indexOf(';', semi + 3);
    const seq = +title.slice(semi + 3, semi2);
    if (envelopeBytes === null) envelopeBytes = Buffer.byteLength(JSON.stringify(env));
    received++;
    if (seq >= c.seen.length) {
      const n = new Uint8Array(Math.max(seq + 1, c.seen.length * 2));
      n.set(c.seen);
      c.seen = n;
    }
    if (c.seen[seq]) { dups++; return; }
    c.seen[seq] = 1;
    c.got++;
    unique++;
    hAdd(hist, now - sent);
    if (now <= tEnd) inWindow++;
    if (!firstRecv) firstRecv = now;
    lastRecv = now;
    const sec = Math.floor((now - t0) / 1000);
    if (sec >= 0) countAt(timeline, sec);
  }

  // The light client (--client raw): one `ws` socket that speaks the wire format by hand, so the
  // generator costs little per message. Engine.IO 4 open "0{...}" -> Socket.IO 5 connect
  // "40/ns,{auth}" -> "40/ns,{sid}" -> "42/ns,1[room:join]" -> ack "43/ns,1[{ok...}]"; every
  // Engine.IO ping "2" gets its pong "3". A room event "42/ns,[type,{...title:"t=<ms>;s=<seq>;..."}...]"
  // is only counted: the publish time and seq are read from the bytes, nothing is JSON-parsed.
  const TITLE = Buffer.from('"title":"');
  function numberAt(buf, i) { // [value, index after it] of the decimal number at buf[i]
    let v = 0;
    let frac = 0;
    let scale = 1;
    for (; i < buf.length; i++) {
      const ch = buf[i];
      if (ch >= 48 && ch <= 57) {
        if (frac) { scale /= 10; v += (ch - 48) * scale; } else v = v * 10 + (ch - 48);
      } else if (ch === 46 && !frac) frac = 1;
      else break;
    }
    return [v, i];
  }
  function onRawEvent(c, buf) {
    const at = buf.indexOf(TITLE, 8);
    if (at < 0) { badEnvelope++; return; }
    const p = at + TITLE.length;
    if (buf[p] !== 116 /* t */) { warmupRecv++; return; }
    if (!measuring) { warmupRecv++; return; }
    const now = nowMs();
    const [sent, i1] = numberAt(buf, p + 2);
    const [seq] = numberAt(buf, i1 + 3); // ";s="
    if (envelopeBytes === null) envelopeBytes = buf.length;
    received++;
    if (seq >= c.seen.length) {
      const n = new Uint8Array(Math.max(seq + 1, c.seen.length * 2));
      n.set(c.seen);
      c.seen = n;
    }
    if (c.seen[seq]) { dups++; return; }
    c.seen[seq] = 1;
    c.got++;
    unique++;
    hAdd(hist, now - sent);
    if (now <= tEnd) inWindow++;
    if (!firstRecv) firstRecv = now;
    lastRecv = now;
    const sec = Math.floor((now - t0) / 1000);
    if (sec >= 0) countAt(timeline, sec);
  }

  function connectOneRaw(idx) {
    const WebSocket = require('ws');
    return new Promise((resolve) => {
      const c = { socket: null, seen: new Uint8Array(cfg.seqCapacity), got: 0, joined: false, idx };
      const token = mintJwt(cfg.jwtSecret, 100000 + idx);
      const ns = cfg.namespace;
      const prefix = ns === '/' ? '' : ns + ',';
      const eventHead = Buffer.from('42' + prefix); // "42/feed," then "[" (no ack id)
      const ackHead = '43' + prefix + '1';
      let done = false;
      const finish = (ok, err) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve({ c, ok, err });
      };
      const u = new URL(cfg.url);
      const url = `ws://${u.host}/socket.io/?EIO=4&transport=websocket&token=${encodeURIComponent(token)}`;
      const ws = new WebSocket(url, { perMessageDeflate: cfg.clientDeflate === 'on', skipUTF8Validation: true });
      c.socket = ws;
      const timer = setTimeout(() => { finish(false, 'connect/join timeout'); ws.terminate(); }, 20000);
      ws.on('message', (buf) => {
        const b0 = buf[0];
        if (b0 === 52 /* 4: message */) {
          const b1 = buf[1];
          if (b1 === 50 /* 2: event */ && buf.compare(eventHead, 0, eventHead.length, 0, eventHead.length) === 0) {
            onRawEvent(c, buf);
          } else if (b1 === 48 /* 0: connect */) {
            if (wsExtensions === null) wsExtensions = ws.extensions || '';
            ws.send(`42${prefix}1${JSON.stringify(['room:join', { room: cfg.room }])}`);
          } else if (b1 === 51 /* 3: ack */) {
            const text = buf.toString('utf8');
            if (!text.startsWith(ackHead)) return;
            let ack = null;
            try { ack = JSON.parse(text.slice(ackHead.length))[0]; } catch (_) { /* below */ }
            if (ack && ack.ok === true && ack.data && ack.data.room === cfg.room) {
              c.joined = true;
              finish(true);
            } else finish(false, 'join rejected: ' + text.slice(0, 200));
          } else if (b1 === 52 /* 4: connect_error */) {
            finish(false, 'connect_error: ' + buf.toString('utf8').slice(0, 200));
          } else if (b1 === 49 /* 1: disconnect */) {
            if (c.joined) { disconnects++; addCount(disconnectReasons, 'server namespace disconnect'); }
            c.joined = false;
          }
        } else if (b0 === 50 /* 2: ping */) {
          ws.send('3');
        } else if (b0 === 48 /* 0: open */) {
          ws.send(`40${prefix}${JSON.stringify({ token })}`);
        }
      });
      ws.on('error', (e) => finish(false, 'ws error: ' + (e && e.message)));
      ws.on('close', (code, reason) => {
        if (c.joined) {
          disconnects++;
          addCount(disconnectReasons, `close ${code} ${String(reason || '')}`.trim());
        }
        finish(false, 'closed: ' + code);
      });
    });
  }

  function connectOne(idx) {
    if (cfg.client === 'raw') return connectOneRaw(idx);
    return new Promise((resolve) => {
      const c = { socket: null, seen: new Uint8Array(cfg.seqCapacity), got: 0, joined: false, idx };
      const token = mintJwt(cfg.jwtSecret, 100000 + idx);
      let done = false;
      const finish = (ok, err) => {
        if (done) return;
        done = true;
        resolve({ c, ok, err });
      };
      const s = io(cfg.url + cfg.namespace, clientOptions(token, 20000, cfg.clientDeflate));
      c.socket = s;
      s.on(cfg.eventType, (env) => onEvent(c, env));
      s.on('connect', () => {
        if (wsExtensions === null) wsExtensions = wsExtensionsOf(s);
        s.timeout(20000).emit('room:join', { room: cfg.room }, (err, ack) => {
          if (err) return finish(false, 'join ack timeout');
          if (ack && ack.ok === true && ack.data && ack.data.room === cfg.room) {
            c.joined = true;
            return finish(true);
          }
          finish(false, 'join rejected: ' + JSON.stringify(ack).slice(0, 200));
        });
      });
      s.on('connect_error', (e) => finish(false, 'connect_error: ' + (e && e.message)));
      s.on('disconnect', (reason) => {
        if (c.joined) {
          disconnects++;
          addCount(disconnectReasons, reason);
        }
        finish(false, 'disconnect: ' + reason);
      });
    });
  }

  async function connectAll() {
    const t = nowMs();
    const { joined, errors } = await connectRange(cfg.first, cfg.count, cfg.connectConcurrency, connectOne, clients);
    send({ type: 'ready', joined, failed: cfg.count - joined, errors, connectMs: nowMs() - t });
  }

  let tickTimer = null;
  function drain(msg) {
    // msg: {accepted, failedSeqs}
    const started = nowMs();
    const expectedPerClient = msg.accepted;
    const failed = new Set(msg.failedSeqs);
    // "idle" means the sockets were quiet while this process was free to read them: a stall
    // of this worker's own event loop (seconds, reading megabytes of buffered frames) restarts
    // the idle clock instead of counting as a quiet period
    let lastCheck = started;
    let awakeSince = started;
    const check = () => {
      const now = nowMs();
      if (now - lastCheck > 1000) awakeSince = now;
      lastCheck = now;
      let complete = true;
      for (const c of clients) {
        if (c.joined && c.got < expectedPerClient) { complete = false; break; }
      }
      const idle = now - Math.max(lastRecv, awakeSince) > cfg.drainIdle * 1000;
      const tooLong = now - started > cfg.drainMax * 1000;
      if (complete || idle || tooLong) {
        clearInterval(tickTimer);
        let deliveredExpected = 0;
        let extra = 0;
        let joinedClients = 0;
        for (const c of clients) {
          if (!c.joined) continue;
          joinedClients++;
          // Count only seqs the publisher got a 2xx for; a failed POST whose
          // event still arrived is "extra".
          if (failed.size) {
            for (const s of failed) if (s < c.seen.length && c.seen[s]) extra++;
          }
          deliveredExpected += c.got;
        }
        deliveredExpected -= extra;
        send({
          type: 'result',
          joinedClients,
          delivered: deliveredExpected,
          extra,
          dups,
          received,
          inWindow,
          firstRecv,
          lastRecv,
          envelopeBytes,
          wsExtensions,
          badEnvelope,
          warmupRecv,
          disconnects,
          disconnectReasons,
          drainEnd: complete ? 'complete' : idle ? 'idle' : 'timeout',
          hist: hToJSON(hist),
          timeline,
          ...meter.read(),
        });
      }
    };
    clearInterval(tickTimer);
    tickTimer = setInterval(() => { send({ type: 'tick', unique }); check(); }, 100);
  }

  onCoordinator({
    start(msg) {
      cfg = msg.cfg;
      connectAll().catch(sendFatal);
    },
    pubstart(msg) {
      t0 = msg.t0;
      tEnd = msg.tEnd;
      measuring = true;
      meter.start();
      tickTimer = setInterval(() => send({ type: 'tick', unique }), 1000);
    },
    pubend: drain,
    close() {
      for (const c of clients) if (c.socket) c.socket.close();
      setTimeout(() => process.exit(0), 200);
    },
  });
}

// ================================================================= coordinator
function makePublisher(o) {
  const u = new URL(o.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.maxInflight });
  const open = new Set(); // outstanding requests, to abort them if the server never answers
  const base = JSON.stringify({ content_id: 'c1', kind: 'post', title: '' }).length;
  const titleLen = Math.max(24, o.payloadBytes - base);
  const pad = 'x'.repeat(titleLen);
  const title = (prefix) => (prefix + pad).slice(0, Math.max(titleLen, prefix.length));
  const bodyFor = (prefix) => JSON.stringify({
    type: o.eventType,
    subjects: [o.room],
    payload: { content_id: 'c1', kind: 'post', title: title(prefix) },
  });
  const payloadSample = JSON.stringify({ content_id: 'c1', kind: 'post', title: title('t=1732345678901.123;s=1;') });

  function post(body) {
    return new Promise((resolve) => {
      const t = nowMs();
      const req = http.request({
        host: u.hostname, port: u.port, path: '/v1/events', method: 'POST', agent,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          authorization: `Bearer ${o.apiKey}`,
        },
        timeout: 30000,
      }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, ms: nowMs() - t, body: Buffer.concat(chunks).toString('utf8') }));
      });
      open.add(req);
      req.on('close', () => open.delete(req));
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => resolve({ status: 0, ms: nowMs() - t, body: String(e && e.message) }));
      req.end(body);
    });
  }
  const abortAll = () => { for (const req of open) req.destroy(new Error('aborted: no response before drain-max')); };
  return { post, bodyFor, agent, abortAll, payloadBytes: Buffer.byteLength(payloadSample) };
}

async function coordinator(o) {
  const startedAt = new Date().toISOString();
  const pub = makePublisher(o);
  const nWorkers = Math.max(1, Math.min(o.workers, o.clients));
  const seqCapacity = o.mode === 'rate' ? Math.ceil(o.rate * o.duration) + 16 : 4096;
  const parts = splitEven(o.clients, nWorkers);
  const pool = forkWorkers(__filename, nWorkers, (w) => ({
    url: o.url, namespace: o.namespace, room: o.room, eventType: o.eventType, jwtSecret: o.jwtSecret,
    first: parts[w].first, count: parts[w].count, seqCapacity, connectConcurrency: o.connectConcurrency,
    clientDeflate: o.clientDeflate, drainIdle: o.drainIdle, drainMax: o.drainMax, client: o.client,
  }), { tick: { unique: 0 } });
  const { workers } = pool;
  const deliveredSoFar = () => pool.total((w) => w.tick.unique);
  const waiting = (what) => () =>
    `${what}: waiting (${workers.filter((w) => w.ready).length}/${workers.length} workers ready, ${deliveredSoFar()} delivered)`;

  // ---- connect + join
  progress(`connecting ${o.clients} clients via ${nWorkers} worker(s) to ${o.url}${o.namespace}`);
  const { seconds: connectS, joined, errors: connectErrors } = await pool.allReady(
    o.connectTimeout * 1000, 'connect', waiting('connect'), 5000);
  progress(`joined ${joined}/${o.clients} clients in ${connectS.toFixed(2)}s`, { errors: connectErrors });
  if (joined === 0) throw new Error('no client joined the room: ' + JSON.stringify(connectErrors));

  // ---- warmup (events titled "w;..." are ignored by clients)
  if (o.warmup > 0) {
    const wr = Math.min(o.mode === 'rate' ? o.rate : 50, 50);
    const n = Math.max(1, Math.round(wr * o.warmup));
    for (let i = 0; i < n; i++) {
      const r = await pub.post(pub.bodyFor('w;'));
      if (r.status < 200 || r.status >= 300) throw new Error(`warmup publish failed: ${r.status} ${r.body.slice(0, 300)}`);
      await sleep(1000 / wr);
    }
    await sleep(500);
  }

  // ---- publish
  const postHist = hNew();
  const statusCounts = {};
  const failedSeqs = [];
  let sampleError = null;
  let sent = 0;
  let accepted = 0;
  let inflight = 0;
  let maxInflight = 0;
  let maxLag = 0;
  const record = (seq, r) => {
    addCount(statusCounts, r.status);
    if (r.status >= 200 && r.status < 300) { accepted++; hAdd(postHist, r.ms); } else {
      failedSeqs.push(seq);
      if (!sampleError) sampleError = `${r.status} ${r.body.slice(0, 300)}`;
    }
  };
  const { t0, tEnd } = await pool.startAt(200, 'pubstart', o.duration, 'publish_start');
  const cpuC0 = process.cpuUsage();
  let lastProgress = nowMs();
  const logProgress = () => {
    const now = nowMs();
    if (now - lastProgress < 1000) return;
    lastProgress = now;
    progress(`t=${((now - t0) / 1000).toFixed(1)}s sent=${sent} accepted=${accepted} inflight=${inflight} delivered=${deliveredSoFar()}`);
  };
  const pending = [];
  let skipped = 0;
  const fire = (stamp) => {
    const seq = sent;
    sent++;
    inflight++;
    if (inflight > maxInflight) maxInflight = inflight;
    const p = pub.post(pub.bodyFor(`t=${stamp.toFixed(3)};s=${seq};`)).then((r) => { inflight--; record(seq, r); });
    pending.push(p);
  };

  if (o.mode === 'rate' || o.rate > 0) {
    // open loop at a fixed rate. In saturate mode a due event is skipped when
    // maxInflight POSTs are already outstanding (the server is not accepting
    // as fast as asked), so the publisher never queues work unboundedly.
    const capped = o.mode === 'saturate';
    const n = Math.round(o.rate * o.duration);
    const interval = 1000 / o.rate;
    let i = 0;
    while (i < n) {
      const now = nowMs();
      while (i < n && t0 + i * interval <= now) {
        const due = t0 + i * interval;
        i++;
        if (capped && inflight >= o.maxInflight) { skipped++; continue; }
        if (now - due > maxLag) maxLag = now - due;
        fire(capped ? now : due);
      }
      logProgress();
      if (i < n) {
        const wait = t0 + i * interval - nowMs();
        await sleep(Math.max(0, Math.floor(wait)));
      }
    }
  } else {
    // closed loop: K lanes, each posts again as soon as its previous POST returns
    let seq = 0;
    const lane = async () => {
      while (nowMs() < tEnd) {
        const s = seq++;
        sent++;
        inflight++;
        if (inflight > maxInflight) maxInflight = inflight;
        const r = await pub.post(pub.bodyFor(`t=${nowMs().toFixed(3)};s=${s};`));
        inflight--;
        record(s, r);
        logProgress();
      }
    };
    const lanes = [];
    for (let k = 0; k < o.concurrency; k++) lanes.push(lane());
    const ticker = setInterval(logProgress, 250);
    await Promise.all(lanes);
    clearInterval(ticker);
  }
  const lastFire = nowMs();
  // wait for all in-flight POSTs to get their response
  const ticker = setInterval(logProgress, 250);
  let abandoned = 0;
  const allDone = Promise.all(pending).then(() => true);
  if (!(await Promise.race([allDone, sleep(o.drainMax * 1000).then(() => false)]))) {
    abandoned = inflight;
    progress(`${inflight} POSTs still unanswered ${o.drainMax}s after publishing ended: aborting them`);
    pub.abortAll();
    await allDone;
  }
  clearInterval(ticker);
  const pubEnd = nowMs();
  const cpuC = process.cpuUsage(cpuC0);
  out({ event: 'phase', phase: 'publish_end', t: pubEnd });
  progress(`publishing done: sent=${sent} accepted=${accepted} in ${((pubEnd - t0) / 1000).toFixed(2)}s; draining`);
  pool.send({ type: 'pubend', accepted, failedSeqs });
  await pool.waitFor(() => workers.every((w) => w.result), (o.drainMax + 15) * 1000, 'drain', waiting('drain'), 5000);
  const drainDone = nowMs();
  out({ event: 'phase', phase: 'drain_end', t: drainDone });

  // ---- aggregate
  const hist = hNew();
  let delivered = 0, dups = 0, extra = 0, inWindow = 0, lastRecv = 0, firstRecv = Infinity;
  let disconnects = 0, badEnvelope = 0, envelopeBytes = null, joinedAtEnd = 0, wsExtensions = null;
  const disconnectReasons = {};
  const drainEnds = {};
  const results = workers.map((w) => w.result);
  for (const r of results) {
    hMerge(hist, r.hist);
    delivered += r.delivered; dups += r.dups; extra += r.extra; inWindow += r.inWindow;
    joinedAtEnd += r.joinedClients;
    if (r.lastRecv > lastRecv) lastRecv = r.lastRecv;
    if (r.firstRecv && r.firstRecv < firstRecv) firstRecv = r.firstRecv;
    disconnects += r.disconnects; badEnvelope += r.badEnvelope;
    if (r.envelopeBytes !== null) envelopeBytes = r.envelopeBytes;
    if (r.wsExtensions !== null) wsExtensions = r.wsExtensions;
    mergeCounts(disconnectReasons, r.disconnectReasons);
    addCount(drainEnds, r.drainEnd);
  }
  const expected = accepted * joined;
  const lost = Math.max(0, expected - delivered);
  const pubWindowS = (pubEnd - t0) / 1000;
  const spanS = lastRecv > 0 ? (lastRecv - t0) / 1000 : null;
  const drainS = lastRecv > 0 ? Math.max(0, (lastRecv - pubEnd) / 1000) : null;
  const result = {
    event: 'result',
    label: o.label,
    started_at: startedAt,
    url: o.url,
    mode: o.mode === 'saturate' ? (o.rate > 0 ? `saturate@${o.rate}/s` : `saturate(closed-loop,K=${o.concurrency})`) : 'rate',
    clients: o.clients,
    workers: nWorkers,
    clients_joined: joined,
    connect_errors: connectErrors,
    connect_s: r3(connectS),
    rate_target: o.mode === 'rate' || o.rate > 0 ? o.rate : null,
    duration_s: o.duration,
    payload_bytes: pub.payloadBytes,
    envelope_bytes: envelopeBytes,
    client_deflate: o.clientDeflate,
    client: o.client,
    ws_extensions: wsExtensions,
    sent,
    accepted,
    post_status: statusCounts,
    post_error_sample: sampleError,
    publish_rate: r3(accepted / (pubEnd - t0) * 1000),
    publish_window_s: r3(pubWindowS),
    publisher_max_lag_ms: r3(maxLag),
    publisher_max_inflight: maxInflight,
    publisher_skipped: skipped,
    posts_abandoned: abandoned,
    post_latency_ms: hSummary(postHist),
    expected,
    delivered,
    lost,
    loss_pct: expected ? r3((lost / expected) * 100) : null,
    duplicates: dups,
    extra_from_failed_posts: extra,
    delivered_per_s: spanS ? Math.round(delivered / spanS) : 0,
    window_delivered_per_s: Math.round(inWindow / o.duration),
    offered_per_s: Math.round((accepted * joined) / o.duration),
    latency_ms: hSummary(hist),
    drain_s: r3(drainS),
    drain_end: drainEnds,
    // deliveries lagged the publisher: some never arrived, or they went on >1 s after the last POST
    fell_behind: lost > 0 || (drainS !== null && drainS > 1.0),
    // fixed-rate mode: the server took every event at the asked rate (the publish phase did not
    // overrun by more than 1 s) and delivered all of them without lagging
    kept_up: o.mode === 'rate'
      ? accepted >= Math.round(o.rate * o.duration) && pubWindowS <= o.duration + 1 && lost === 0 && !(drainS > 1.0)
      : lost === 0 && !(drainS > 1.0),
    disconnects,
    disconnect_reasons: disconnectReasons,
    bad_envelopes: badEnvelope,
    clients_joined_at_end: joinedAtEnd,
    timeline_per_s: sumTimelines(results.map((r) => r.timeline)),
    loadgen: loadgenStats(cpuC, results),
    drain_wait_s: r3((drainDone - pubEnd) / 1000),
    last_fire_to_pub_end_s: r3((pubEnd - lastFire) / 1000),
  };
  out(result);
  await pool.close(500);
  pub.agent.destroy();
}

// ---------------------------------------------------------------- main
common.runMain(parseArgs(process.argv.slice(2)), runWorker, coordinator);
