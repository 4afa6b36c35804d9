#!/usr/bin/env node
// bench/messages load generator: direct messages over many conversations.
//
// C direct conversations of two users (a sender "a" and a receiver "b"), each
// user with one official socket.io-client connection on /messages (websocket
// only, its own HS256 JWT). The conversations are split over W worker
// processes; both members of a conversation live in the same worker, so send
// and receive times come from one clock (performance.timeOrigin + now()).
//
// Phases: connect all sockets -> the sender of each conversation emits
// `conversation:open {user_id: b}` (ack data.id) -> one warm-up message per
// conversation, waited for at the receiver (proves the receiver's socket is in
// the conversation room) -> D seconds of sends -> drain.
//
// Sends are open loop at a total rate R: message i (i = 0 .. R*D-1) is due at
// t0 + i/R and goes to conversation i mod C, whatever the server does; its body
// carries the due time ("t=<ms>;i=<i>;xxx..."), so a slow server (or a late
// sender) counts as latency: no coordinated omission. The sender lag (emit time
// - due time) is reported so load-generator lateness can be told apart.
//
//   ack latency      = ack received - due time      (message:send acknowledgement)
//   delivery latency = message:new at the receiver - due time
//
// Output: JSON lines on stdout ({"event": "progress" | "phase" | "result" | "error"}).
// Run `node loadgen.js --help` for options.
'use strict';

const path = require('path');

const common = require(path.join(__dirname, '..', 'common.js'));
const {
  nowMs, sleep, r3, addCount, mergeCounts, countAt, sumTimelines, hNew, hAdd, hToJSON, hMerge, hPct, hSummary,
  mintJwt, out, progress, forkWorkers, loadgenStats, onCoordinator, sendFatal, clientOptions, inLanes, loadMeter,
} = common;

// ---------------------------------------------------------------- args
function parseArgs(argv) {
  const defaults = {
    url: 'http://127.0.0.1:8080',
    conversations: 200,
    rate: 500, // messages/s over all conversations
    duration: 20,
    workers: 2,
    bodyBytes: 100,
    jwtSecret: process.env.BENCH_JWT_SECRET || '',
    userPrefix: 'bm',
    connectConcurrency: 25, // per worker
    openConcurrency: 10, // conversation:open + warm-up in flight, per worker
    setupTimeout: 120, // s: connect + open + warm-up
    ackTimeout: 30, // s per message:send
    drainIdle: 3, // s without a delivery (all acks in) => done
    drainMax: 30, // s after the last send => give up, the rest is lost
    clientDeflate: 'on',
  };
  const o = common.parseArgs(argv, defaults, 'usage: BENCH_JWT_SECRET=... node loadgen.js');
  if (!o.worker) {
    if (!o.jwtSecret) throw new Error('set BENCH_JWT_SECRET (or --jwt-secret)');
    if (!(o.rate > 0) || !(o.duration > 0) || !(o.conversations > 0)) throw new Error('rate, duration, conversations must be > 0');
    common.checkClientDeflate(o);
    if (!/^[A-Za-z0-9_.-]{1,20}$/.test(o.userPrefix)) throw new Error('bad --user-prefix');
  }
  return o;
}

// ================================================================= worker
function runWorker() {
  const { io } = require('socket.io-client');
  let cfg = null;
  const send = (m) => process.send(m);
  const convs = []; // {c, a, b, aSock, bSock, id, warmed, warmResolve}
  const byC = new Map();
  // per message i (global index): bit 1 = ack ok, 2 = ack error/timeout, 4 = delivered
  let state = null;
  let t0 = 0;
  let tEnd = 0;
  let sent = 0, acked = 0, ackErr = 0, ackTimeouts = 0, delivered = 0, deliveredUnacked = 0;
  let dups = 0, wrongConv = 0, wrongSender = 0, withMeta = 0, badBody = 0, disconnects = 0;
  // seq checks, from what the clients got: per conversation the seqs received must rise
  // (order) and cover 1..max (gap-free, with the warm-up message as seq 1); a message's
  // message:new seq must equal its ack's seq
  let seqOutOfOrder = 0, seqMismatch = 0, badSeq = 0;
  let ackSeq = null; // Int32Array: message i -> the seq its ack gave (0: none yet)
  let newSeq = null; // Int32Array: message i -> the seq its message:new carried
  let lastRecv = 0, firstRecv = 0, lastAck = 0, inWindow = 0;
  const ackErrors = {};
  const disconnectReasons = {};
  const ackHist = hNew();
  const delHist = hNew();
  const lagHist = hNew();
  const bySecond = []; // delivery latency histograms by the second the message was due
  const timeline = [];
  let outstanding = 0;
  const meter = loadMeter();
  let pad = '';

  function makeSocket(user) {
    return io(cfg.url + '/messages', clientOptions(mintJwt(cfg.jwtSecret, user), 20000, cfg.clientDeflate));
  }

  function connectOne(s) {
    return new Promise((resolve) => {
      if (s.connected) return resolve(null);
      const t = setTimeout(() => resolve('connect timeout'), 30000);
      s.once('connect', () => { clearTimeout(t); resolve(null); });
      s.once('connect_error', (e) => {
        clearTimeout(t);
        const code = e && e.data && e.data.code;
        resolve('connect_error: ' + (code || (e && e.message)));
      });
    });
  }

  function onNew(cv, msg, meta) {
    const now = nowMs();
    const body = msg && typeof msg.body === 'string' ? msg.body : null;
    if (body === null) { badBody++; return; }
    if (body.startsWith('w;')) {
      if (Number.isInteger(msg.seq)) { cv.seqs.add(msg.seq); cv.lastSeq = Math.max(cv.lastSeq, msg.seq); }
      if (cv.warmResolve) cv.warmResolve();
      return;
    }
    if (body.charCodeAt(0) !== 116 /* t */) { badBody++; return; }
    const semi = body.indexOf(';', 2);
    const due = +body.slice(2, semi);
    const semi2 = body.indexOf(';', semi + 3);
    const i = +body.slice(semi + 3, semi2);
    if (!(i >= 0 && i < state.length) || !(due > 0)) { badBody++; return; }
    if (msg.conversation_id !== cv.id || i % cfg.conversations !== cv.c) wrongConv++;
    if (msg.sender_id !== cv.a) wrongSender++;
    if (meta && meta.offsets) withMeta++;
    if (state[i] & 4) { dups++; return; }
    state[i] |= 4;
    const seq = msg.seq;
    if (!Number.isInteger(seq) || seq < 1) badSeq++;
    else {
      if (seq <= cv.lastSeq) seqOutOfOrder++;
      cv.lastSeq = Math.max(cv.lastSeq, seq);
      cv.seqs.add(seq);
      newSeq[i] = seq;
      if (ackSeq[i] && ackSeq[i] !== seq) seqMismatch++;
    }
    delivered++;
    if (!(state[i] & 1)) deliveredUnacked++; // ack not (yet) in: the delivery raced the ack
    hAdd(delHist, now - due);
    const dsec = Math.max(0, Math.floor((due - t0) / 1000));
    while (bySecond.length <= dsec) bySecond.push(hNew());
    hAdd(bySecond[dsec], now - due);
    if (now <= tEnd) inWindow++;
    if (!firstRecv) firstRecv = now;
    lastRecv = now;
    const sec = Math.floor((now - t0) / 1000);
    if (sec >= 0) countAt(timeline, sec);
  }

  async function setup() {
    const t = nowMs();
    const errors = {};
    for (let c = cfg.worker; c < cfg.conversations; c += cfg.workers) {
      const cv = { c, a: `${cfg.userPrefix}-a-${c}`, b: `${cfg.userPrefix}-b-${c}`, id: null, warmed: false, warmResolve: null, ok: true, seqs: new Set(), lastSeq: 0, acked: [] };
      convs.push(cv);
      byC.set(c, cv);
    }
    // connect: every user its own connection
    const socks = [];
    for (const cv of convs) {
      socks.push([cv, 'aSock', cv.a], [cv, 'bSock', cv.b]);
    }
    let connected = 0;
    await inLanes(socks, cfg.connectConcurrency, async ([cv, key, user]) => {
      const s = makeSocket(user);
      cv[key] = s;
      s.on('disconnect', (reason) => {
        if (s._benchConnected) { disconnects++; addCount(disconnectReasons, reason); }
      });
      if (key === 'bSock') s.on('message:new', (msg, meta) => onNew(cv, msg, meta));
      const err = await connectOne(s);
      if (err) { addCount(errors, err); cv.ok = false; } else { s._benchConnected = true; connected++; }
    });
    const connectMs = nowMs() - t;
    send({ type: 'progress', msg: `worker ${cfg.worker}: ${connected}/${socks.length} sockets connected in ${(connectMs / 1000).toFixed(1)}s` });
    // open + warm up
    let opened = 0, warmed = 0;
    const t1 = nowMs();
    await inLanes(convs.filter((cv) => cv.ok), cfg.openConcurrency, async (cv) => {
      let ack;
      try {
        ack = await cv.aSock.timeout(30000).emitWithAck('conversation:open', { user_id: cv.b });
      } catch (e) { addCount(errors, 'conversation:open ack timeout'); cv.ok = false; return; }
      if (!ack || ack.ok !== true || !ack.data || typeof ack.data.id !== 'string') {
        addCount(errors, 'conversation:open rejected: ' + JSON.stringify(ack).slice(0, 160));
        cv.ok = false;
        return;
      }
      cv.id = ack.data.id;
      opened++;
      const got = new Promise((resolve) => { cv.warmResolve = resolve; });
      let wack;
      try {
        wack = await cv.aSock.timeout(30000).emitWithAck('message:send', { conversation_id: cv.id, client_msg_id: `w${cv.c}`, body: `w;${cv.c}` });
      } catch (e) { addCount(errors, 'warm-up ack timeout'); cv.ok = false; return; }
      if (!wack || wack.ok !== true) {
        addCount(errors, 'warm-up rejected: ' + JSON.stringify(wack).slice(0, 160));
        cv.ok = false;
        return;
      }
      const ok = await Promise.race([got.then(() => true), sleep(15000).then(() => false)]);
      cv.warmResolve = null;
      if (!ok) { addCount(errors, 'warm-up message not received in 15 s'); cv.ok = false; return; }
      cv.warmed = true;
      warmed++;
    });
    send({
      type: 'ready', sockets: socks.length, connected, conversations: convs.length, opened, warmed, errors,
      connectMs, openMs: nowMs() - t1,
    });
  }

  function fire(i, due) {
    const cv = byC.get(i % cfg.conversations);
    if (!cv || !cv.ok) return false;
    const emitAt = nowMs();
    hAdd(lagHist, emitAt - due);
    sent++;
    outstanding++;
    cv.aSock.timeout(cfg.ackTimeout * 1000).emit(
      'message:send',
      { conversation_id: cv.id, client_msg_id: `m${i}`, body: `t=${due.toFixed(3)};i=${i};${pad}` },
      (err, ack) => {
        outstanding--;
        const now = nowMs();
        if (err) { ackTimeouts++; state[i] |= 2; return; }
        if (ack && ack.ok === true) {
          acked++;
          state[i] |= 1;
          const seq = ack.data && ack.data.seq;
          if (Number.isInteger(seq) && seq > 0) {
            ackSeq[i] = seq;
            if (newSeq[i] && newSeq[i] !== seq) seqMismatch++;
          } else badSeq++;
          cv.acked.push(i);
          hAdd(ackHist, now - due);
          lastAck = now;
        } else {
          ackErr++;
          state[i] |= 2;
          addCount(ackErrors, (ack && ack.error && ack.error.code) || 'bad ack');
        }
      },
    );
    return true;
  }

  async function sendPhase() {
    const n = Math.round(cfg.rate * cfg.duration);
    const interval = 1000 / cfg.rate;
    state = new Uint8Array(n);
    ackSeq = new Int32Array(n);
    newSeq = new Int32Array(n);
    const mine = [];
    for (let i = 0; i < n; i++) if ((i % cfg.conversations) % cfg.workers === cfg.worker) mine.push(i);
    let k = 0;
    meter.start();
    const ticker = setInterval(() => send({ type: 'tick', sent, acked, delivered }), 1000);
    while (nowMs() < t0) await sleep(1);
    while (k < mine.length) {
      const now = nowMs();
      while (k < mine.length && t0 + mine[k] * interval <= now) {
        fire(mine[k], t0 + mine[k] * interval);
        k++;
      }
      if (k < mine.length) await sleep(Math.max(0, Math.floor(t0 + mine[k] * interval - nowMs())));
    }
    const lastSend = nowMs();
    send({ type: 'sent', sent });
    // acks: each resolves (answer or timeout) within ackTimeout
    while (outstanding > 0 && nowMs() - lastSend < (cfg.ackTimeout + 2) * 1000) await sleep(20);
    const acksIn = nowMs();
    // deliveries of acked messages
    let drainEnd = 'complete';
    for (;;) {
      let missing = 0;
      for (let i = 0; i < state.length; i++) if ((state[i] & 5) === 1) { missing++; break; }
      if (!missing) break;
      const now = nowMs();
      if (now - Math.max(lastRecv, acksIn) > cfg.drainIdle * 1000) { drainEnd = 'idle'; break; }
      if (now - lastSend > cfg.drainMax * 1000) { drainEnd = 'timeout'; break; }
      await sleep(50);
    }
    clearInterval(ticker);
    let lost = 0, deliveredAcked = 0, deliveredNotAcked = 0;
    for (const i of mine) {
      const s = state[i];
      if (s & 1) { if (s & 4) deliveredAcked++; else lost++; } else if (s & 4) deliveredNotAcked++;
    }
    // gap-free per conversation: the seqs received cover 1..max
    let seqGaps = 0, convsWithGaps = 0;
    const conversationsSeen = [];
    for (const cv of convs) {
      if (!cv.id) continue;
      const gaps = cv.lastSeq - cv.seqs.size;
      if (gaps > 0) { seqGaps += gaps; convsWithGaps++; }
      conversationsSeen.push({ id: cv.id, acked: cv.acked, received_max_seq: cv.lastSeq, received: cv.seqs.size });
    }
    let stillConnected = 0;
    for (const cv of convs) {
      if (cv.aSock && cv.aSock.connected) stillConnected++;
      if (cv.bSock && cv.bSock.connected) stillConnected++;
    }
    send({
      type: 'result',
      sent, acked, ackErr, ackTimeouts, ackErrors, delivered, deliveredAcked, deliveredNotAcked,
      deliveredBeforeAck: deliveredUnacked, lost, dups, wrongConv, wrongSender, withMeta, badBody,
      seqOutOfOrder, seqMismatch, badSeq, seqGaps, convsWithGaps, conversationsSeen,
      disconnects, disconnectReasons, stillConnected, inWindow, firstRecv, lastRecv, lastAck, lastSend,
      drainEnd, outstandingAtEnd: outstanding,
      ackHist: hToJSON(ackHist), delHist: hToJSON(delHist), lagHist: hToJSON(lagHist), timeline,
      bySecond: bySecond.map(hToJSON),
      ...meter.read(),
    });
  }

  onCoordinator({
    start(msg) {
      cfg = msg.cfg;
      const base = `t=${(nowMs() + 1e6).toFixed(3)};i=${Math.round(cfg.rate * cfg.duration)};`.length;
      pad = 'x'.repeat(Math.max(0, cfg.bodyBytes - base));
      setup().catch(sendFatal);
    },
    go(msg) {
      t0 = msg.t0;
      tEnd = msg.tEnd;
      sendPhase().catch(sendFatal);
    },
    close() {
      for (const cv of convs) { if (cv.aSock) cv.aSock.close(); if (cv.bSock) cv.bSock.close(); }
      setTimeout(() => process.exit(0), 200);
    },
  });
}

// ================================================================= coordinator
async function coordinator(o) {
  const startedAt = new Date().toISOString();
  const nWorkers = Math.max(1, Math.min(o.workers, o.conversations));
  const pool = forkWorkers(__filename, nWorkers, (w) => ({
    url: o.url, worker: w, workers: nWorkers, conversations: o.conversations, rate: o.rate, duration: o.duration,
    bodyBytes: o.bodyBytes, jwtSecret: o.jwtSecret, userPrefix: o.userPrefix, connectConcurrency: o.connectConcurrency,
    openConcurrency: o.openConcurrency, ackTimeout: o.ackTimeout, drainIdle: o.drainIdle, drainMax: o.drainMax,
    clientDeflate: o.clientDeflate,
  }), { tick: { sent: 0, acked: 0, delivered: 0 } });
  const { workers, waitFor } = pool;

  // ---- setup
  progress(`connecting ${2 * o.conversations} sockets (${o.conversations} conversations) via ${nWorkers} worker(s) to ${o.url}/messages`);
  const { seconds: setupS, errors: setupErrors } = await pool.allReady(o.setupTimeout * 1000, 'setup (connect, open, warm-up)',
    () => `setup: ${workers.filter((w) => w.ready).length}/${nWorkers} workers ready`);
  const sum = (k) => pool.total((w) => w.ready[k]);
  const warmed = sum('warmed');
  progress(`setup done in ${setupS.toFixed(1)}s: ${sum('connected')}/${sum('sockets')} sockets, ${sum('opened')} opened, ${warmed} warmed of ${o.conversations} conversations`, { errors: setupErrors });
  if (warmed === 0) throw new Error('no conversation ready: ' + JSON.stringify(setupErrors));
  out({ event: 'phase', phase: 'setup_done' });

  // ---- send
  const { t0 } = await pool.startAt(300, 'go', o.duration, 'send_start');
  const cpuC0 = process.cpuUsage();
  const tick = () => {
    const s = workers.reduce((a, w) => ({ sent: a.sent + w.tick.sent, acked: a.acked + w.tick.acked, delivered: a.delivered + w.tick.delivered }), { sent: 0, acked: 0, delivered: 0 });
    return `t=${((nowMs() - t0) / 1000).toFixed(1)}s sent=${s.sent} acked=${s.acked} delivered=${s.delivered}`;
  };
  await waitFor(() => workers.every((w) => w.sent), (o.duration + 30) * 1000, 'send', () => tick());
  out({ event: 'phase', phase: 'send_end' });
  progress(`sending done (${tick()}); waiting for acks and deliveries`);
  await waitFor(() => workers.every((w) => w.result), (o.drainMax + o.ackTimeout + 20) * 1000, 'drain', () => tick());
  out({ event: 'phase', phase: 'drain_end' });
  const cpuC = process.cpuUsage(cpuC0);

  // ---- aggregate
  const ackH = hNew(), delH = hNew(), lagH = hNew();
  const secH = [];
  const agg = {};
  const numKeys = ['sent', 'acked', 'ackErr', 'ackTimeouts', 'delivered', 'deliveredAcked', 'deliveredNotAcked',
    'deliveredBeforeAck', 'lost', 'dups', 'wrongConv', 'wrongSender', 'withMeta', 'badBody', 'disconnects',
    'stillConnected', 'inWindow', 'outstandingAtEnd', 'seqOutOfOrder', 'seqMismatch', 'badSeq', 'seqGaps',
    'convsWithGaps'];
  for (const k of numKeys) agg[k] = 0;
  const ackErrors = {}, disconnectReasons = {}, drainEnds = {};
  let lastRecv = 0, lastSend = 0;
  const results = workers.map((w) => w.result);
  for (const r of results) {
    for (const k of numKeys) agg[k] += r[k];
    hMerge(ackH, r.ackHist); hMerge(delH, r.delHist); hMerge(lagH, r.lagHist);
    r.bySecond.forEach((h, i) => { while (secH.length <= i) secH.push(hNew()); hMerge(secH[i], h); });
    mergeCounts(ackErrors, r.ackErrors);
    mergeCounts(disconnectReasons, r.disconnectReasons);
    addCount(drainEnds, r.drainEnd);
    if (r.lastRecv > lastRecv) lastRecv = r.lastRecv;
    if (r.lastSend > lastSend) lastSend = r.lastSend;
  }
  const spanS = lastRecv > 0 ? (lastRecv - t0) / 1000 : null;
  const result = {
    event: 'result',
    started_at: startedAt,
    url: o.url,
    conversations: o.conversations,
    sockets: sum('sockets'),
    sockets_connected: sum('connected'),
    conversations_opened: sum('opened'),
    conversations_ready: warmed,
    setup_errors: setupErrors,
    setup_s: r3(setupS),
    workers: nWorkers,
    rate_target: o.rate,
    duration_s: o.duration,
    planned: Math.round(o.rate * o.duration),
    body_bytes: o.bodyBytes,
    client_deflate: o.clientDeflate,
    sent: agg.sent,
    send_window_s: r3((lastSend - t0) / 1000),
    send_rate: r3(agg.sent / Math.max(1e-3, (lastSend - t0) / 1000)),
    acked: agg.acked,
    ack_errors: agg.ackErr,
    ack_error_codes: ackErrors,
    ack_timeouts: agg.ackTimeouts,
    delivered: agg.delivered,
    delivered_of_acked: agg.deliveredAcked,
    delivered_not_acked: agg.deliveredNotAcked,
    delivered_before_ack: agg.deliveredBeforeAck,
    lost: agg.lost,
    duplicates: agg.dups,
    wrong_conversation: agg.wrongConv,
    wrong_sender: agg.wrongSender,
    deliveries_with_meta_offsets: agg.withMeta,
    bad_bodies: agg.badBody,
    // seq, from what the clients got (see the worker): per conversation rising, 1..max
    seq_out_of_order: agg.seqOutOfOrder,
    seq_ack_mismatch: agg.seqMismatch,
    seq_invalid: agg.badSeq,
    seq_gaps: agg.seqGaps,
    conversations_with_seq_gaps: agg.convsWithGaps,
    // per conversation: its id and the messages acked in it (checked against the database)
    conversations_seen: [].concat(...results.map((r) => r.conversationsSeen)),
    delivered_per_s: spanS ? Math.round(agg.delivered / spanS) : 0,
    window_delivered_per_s: Math.round(agg.inWindow / o.duration),
    drain_s: lastRecv > 0 ? r3(Math.max(0, (lastRecv - lastSend) / 1000)) : null,
    drain_end: drainEnds,
    ack_latency_ms: hSummary(ackH),
    delivery_latency_ms: hSummary(delH),
    sender_lag_ms: hSummary(lagH),
    // delivery latency of the messages due in send second 0, 1, 2, ...
    delivery_by_send_second: secH.map((h, i) => ({ s: i, n: h.n, p50: r3(hPct(h, 0.5)), p99: r3(hPct(h, 0.99)), max: h.n ? r3(h.max) : null })),
    disconnects: agg.disconnects,
    disconnect_reasons: disconnectReasons,
    sockets_connected_at_end: agg.stillConnected,
    timeline_per_s: sumTimelines(results.map((r) => r.timeline)),
    loadgen: loadgenStats(cpuC, results),
  };
  out(result);
  await pool.close(500);
}

// ---------------------------------------------------------------- main
common.runMain(parseArgs(process.argv.slice(2)), runWorker, coordinator);
