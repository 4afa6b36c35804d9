#!/usr/bin/env node
// bench/liveroom load generator: one live room, V viewers, chat + reactions.
//
// V official socket.io-client connections (split over N worker processes) connect to /live and
// join `live:<id>`. For D seconds, open loop, the workers together send C chat messages/s
// (`chat:send`, from S distinct sender sockets among the viewers) and R reactions/s
// (`reaction:send`, fire-and-forget with an ack counted later, from the viewers round robin).
// Every viewer counts each `chat:new` (deduplicated per message) and each `reaction:burst`.
//
// Chat latency = viewer receive time - scheduled send time, both from this machine's wall clock
// (performance.timeOrigin + performance.now()); the send time travels in the message body
// ("t=<ms>;s=<worker>:<seq>;..."), so nothing depends on the server's `ts`. The scheduled time
// (not the time the emit was written) is used: a slow server counts against itself.
//
// Output: JSON lines on stdout ({"event":"progress"|"phase"|"result"|"error", ...}).
'use strict';

const path = require('path');

const common = require(path.join(__dirname, '..', 'common.js'));
const {
  nowMs, sleep, addCount, mergeCounts, countAt, sumTimelines, hNew, hAdd, hToJSON, hMerge, hPct, mintJwt, out,
  progress, splitEven, forkWorkers, onCoordinator, sendFatal, clientOptions, connectRange,
} = common;

// ---------------------------------------------------------------- histogram (bench/common.js)
const r1 = (x) => (x === null || x === undefined ? null : Math.round(x * 10) / 10);
function hSummary(h) {
  return { count: h.n, mean: h.n ? r1(h.sum / h.n) : null, p50: r1(hPct(h, 0.5)), p90: r1(hPct(h, 0.9)),
    p99: r1(hPct(h, 0.99)), max: h.n ? r1(h.max) : null };
}

// ---------------------------------------------------------------- args
function parseArgs(argv) {
  const defaults = {
    url: 'http://127.0.0.1:8080', live: 'bench', viewers: 2000, workers: 2, senders: 100,
    chatRate: 50, reactionRate: 500, duration: 20, bodyBytes: 100,
    connectConcurrency: 50, connectTimeout: 120, drainIdle: 3, drainMax: 20, ackTimeout: 30,
  };
  const o = common.parseArgs(argv, defaults);
  o.jwtSecret = process.env.BENCH_JWT_SECRET || 'bench-secret'; // no option: the environment only
  if (!(o.viewers > 0 && o.workers > 0 && o.duration > 0)) throw new Error('viewers, workers, duration > 0');
  o.senders = Math.max(1, Math.min(o.senders, o.viewers));
  return o;
}

const KINDS = ['heart', 'fire', 'clap', 'laugh', 'wow'];

// ================================================================= worker
function runWorker() {
  const { io } = require('socket.io-client');
  let cfg = null;
  const viewers = []; // {s, joined, seen: [Uint8Array per sender worker], got, bursts, reacted}
  let t0 = 0;
  let tEnd = 0;
  let measuring = false;
  const hist = hNew();
  let unique = 0, dups = 0, inWindow = 0, lastRecv = 0, disconnects = 0, badBody = 0;
  const disconnectReasons = {};
  const timeline = [];
  let burstFrames = 0, burstFramesMeasured = 0, burstSum = 0, lastBurst = 0;
  let maxBurstsPerViewerSec = 0;
  // what this worker sent
  const chat = { sent: 0, ok: 0, errors: {}, ackHist: hNew(), failed: [], pending: 0 };
  const react = { sent: 0, ok: 0, errors: {}, pending: 0 };
  const send = (m) => process.send(m);

  function onChat(v, msg) {
    if (!measuring) return;
    const now = nowMs();
    const body = msg && msg.body;
    if (body === 'warmup') return;
    if (typeof body !== 'string' || body.charCodeAt(0) !== 116 /* t */) { badBody++; return; }
    const semi = body.indexOf(';');
    const sent = +body.slice(2, semi);
    const colon = body.indexOf(':', semi);
    const semi2 = body.indexOf(';', colon);
    const w = +body.slice(semi + 3, colon);
    const seq = +body.slice(colon + 1, semi2);
    const seen = v.seen[w];
    if (!seen || seq >= seen.length) { badBody++; return; }
    if (seen[seq]) { dups++; return; }
    seen[seq] = 1;
    v.got++;
    unique++;
    hAdd(hist, now - sent);
    if (now <= tEnd) inWindow++;
    lastRecv = now;
    const sec = Math.floor((now - t0) / 1000);
    if (sec >= 0) countAt(timeline, sec);
  }

  function onBurst(v, b) {
    burstFrames++;
    lastBurst = nowMs();
    if (!measuring) return;
    burstFramesMeasured++;
    const sec = Math.floor((nowMs() - t0) / 1000);
    v.burstSecs[sec] = (v.burstSecs[sec] || 0) + 1;
    if (v.burstSecs[sec] > maxBurstsPerViewerSec) maxBurstsPerViewerSec = v.burstSecs[sec];
    const counts = (b && b.counts) || {};
    for (const k in counts) { v.reacted += counts[k]; burstSum += counts[k]; }
  }

  function connectOne(idx) {
    return new Promise((resolve) => {
      const v = { s: null, joined: false, idx, got: 0, reacted: 0, burstSecs: {}, seen: [] };
      for (let w = 0; w < cfg.nWorkers; w++) v.seen.push(new Uint8Array(cfg.seqCapacity));
      let done = false;
      const finish = (ok, err) => { if (!done) { done = true; resolve({ c: v, ok, err }); } };
      const s = io(cfg.url + '/live', clientOptions(mintJwt(cfg.jwtSecret, `v${idx}`), 20000));
      v.s = s;
      s.on('chat:new', (m) => onChat(v, m));
      s.on('reaction:burst', (b) => onBurst(v, b));
      s.on('connect', () => {
        s.timeout(30000).emit('room:join', { room: `live:${cfg.live}` }, (err, ack) => {
          if (err) return finish(false, 'join ack timeout');
          if (ack && ack.ok) { v.joined = true; return finish(true); }
          finish(false, 'join rejected: ' + JSON.stringify(ack).slice(0, 200));
        });
      });
      s.on('connect_error', (e) => finish(false, 'connect_error: ' + (e && e.message)));
      s.on('disconnect', (reason) => {
        if (v.joined) { disconnects++; addCount(disconnectReasons, reason); }
        finish(false, 'disconnect: ' + reason);
      });
    });
  }

  async function connectAll() {
    const t = nowMs();
    const { joined, errors } = await connectRange(cfg.first, cfg.count, cfg.connectConcurrency, connectOne, viewers);
    send({ type: 'ready', joined, errors, connectMs: nowMs() - t });
  }

  function bodyFor(stamp, seq) {
    const head = `t=${stamp.toFixed(3)};s=${cfg.workerIndex}:${seq};`;
    return head + 'x'.repeat(Math.max(0, cfg.bodyBytes - head.length));
  }

  function sendChat(sender, seq, due) {
    const start = nowMs();
    chat.sent++;
    chat.pending++;
    sender.s.timeout(cfg.ackTimeout * 1000).emit('chat:send', {
      live_id: cfg.live, client_msg_id: `w${cfg.workerIndex}-${seq}`, body: bodyFor(due, seq),
    }, (err, ack) => {
      chat.pending--;
      if (!err && ack && ack.ok) { chat.ok++; hAdd(chat.ackHist, nowMs() - start); return; }
      addCount(chat.errors, err ? 'ack_timeout' : (ack && ack.error && ack.error.code) || 'unknown');
      chat.failed.push(seq);
    });
  }

  function sendReaction(v, i) {
    react.sent++;
    react.pending++;
    v.s.timeout(cfg.ackTimeout * 1000).emit('reaction:send', { live_id: cfg.live, kind: KINDS[i % KINDS.length] }, (err, ack) => {
      react.pending--;
      if (!err && ack && ack.ok) { react.ok++; return; }
      addCount(react.errors, err ? 'ack_timeout' : (ack && ack.error && ack.error.code) || 'unknown');
    });
  }

  async function warmup() {
    // the live's chat opens when the server has handled live.started: retry until it answers ok
    const v = viewers.find((x) => x.joined);
    const deadline = nowMs() + 15000;
    let last = null;
    while (nowMs() < deadline) {
      last = await new Promise((resolve) => v.s.timeout(10000).emit('chat:send',
        { live_id: cfg.live, client_msg_id: `warm-${cfg.workerIndex}-${Math.random()}`, body: 'warmup' },
        (err, ack) => resolve(err ? { ok: false, error: { code: 'ack_timeout' } } : ack)));
      if (last && last.ok) return send({ type: 'warm' });
      await sleep(200);
    }
    send({ type: 'fatal', error: 'warmup chat:send never succeeded: ' + JSON.stringify(last) });
  }

  async function publish() {
    const senders = viewers.filter((v) => v.joined).slice(0, cfg.senders);
    const active = viewers.filter((v) => v.joined);
    const nChat = Math.round(cfg.chatRate * cfg.duration);
    const nReact = Math.round(cfg.reactionRate * cfg.duration);
    const chatEvery = 1000 / cfg.chatRate;
    const reactEvery = 1000 / cfg.reactionRate;
    let i = 0, j = 0;
    while (i < nChat || j < nReact) {
      const now = nowMs();
      while (i < nChat && t0 + i * chatEvery <= now) { sendChat(senders[i % senders.length], i, t0 + i * chatEvery); i++; }
      while (j < nReact && t0 + j * reactEvery <= now) { sendReaction(active[(j * 7) % active.length], j); j++; }
      if (i >= nChat && j >= nReact) break;
      const nextDue = Math.min(i < nChat ? t0 + i * chatEvery : Infinity, j < nReact ? t0 + j * reactEvery : Infinity);
      await sleep(Math.max(0, Math.floor(nextDue - nowMs())));
    }
    const waitAcks = nowMs() + cfg.ackTimeout * 1000 + 1000;
    while ((chat.pending || react.pending) && nowMs() < waitAcks) await sleep(20);
    send({ type: 'sent', chat: { sent: chat.sent, ok: chat.ok, errors: chat.errors, failed: chat.failed },
      react: { sent: react.sent, ok: react.ok, errors: react.errors } });
  }

  let tick = null;
  function drain(msg) {
    // msg.expected[w] = the seqs worker w sent that were accepted; complete when all arrived
    const started = nowMs();
    const expectedPerViewer = msg.acceptedTotal;
    const check = () => {
      const now = nowMs();
      let complete = true;
      for (const v of viewers) {
        if (v.joined && (v.got < expectedPerViewer || v.reacted < msg.reactionsAccepted)) { complete = false; break; }
      }
      const idle = now - Math.max(lastRecv, lastBurst, started) > cfg.drainIdle * 1000;
      if (!(complete || idle || now - started > cfg.drainMax * 1000)) return;
      clearInterval(tick);
      measuring = false;
      let joinedViewers = 0, delivered = 0, extra = 0, reactedTotal = 0, reactedMin = Infinity, gotMin = Infinity;
      for (const v of viewers) {
        if (!v.joined) continue;
        joinedViewers++;
        delivered += v.got;
        let mine = 0;
        msg.failed.forEach((seqs, w) => { for (const q of seqs) if (v.seen[w][q]) { extra++; mine++; } });
        if (v.got - mine < gotMin) gotMin = v.got - mine;
        reactedTotal += v.reacted;
        if (v.reacted < reactedMin) reactedMin = v.reacted;
      }
      send({
        type: 'result', joinedViewers, delivered: delivered - extra, extra, dups, inWindow, lastRecv, badBody, disconnects,
        disconnectReasons, timeline, hist: hToJSON(hist), ackHist: hToJSON(chat.ackHist),
        burstFrames: burstFramesMeasured, burstSum, reactedTotal, reactedMin: reactedMin === Infinity ? 0 : reactedMin,
        gotMin: gotMin === Infinity ? 0 : gotMin,
        maxBurstsPerViewerSec, drainEnd: complete ? 'complete' : idle ? 'idle' : 'timeout',
      });
    };
    clearInterval(tick);
    tick = setInterval(() => { send({ type: 'tick', unique }); check(); }, 100);
  }

  onCoordinator({
    start(msg) { cfg = msg.cfg; connectAll().catch(sendFatal); },
    warmup() { warmup().catch(sendFatal); },
    go(msg) {
      t0 = msg.t0; tEnd = msg.tEnd; measuring = true;
      tick = setInterval(() => send({ type: 'tick', unique }), 1000);
      const wait = t0 - nowMs();
      setTimeout(() => publish().catch(sendFatal), Math.max(0, wait));
    },
    drain,
    close() { for (const v of viewers) v.s.close(); setTimeout(() => process.exit(0), 200); },
  });
}

// ================================================================= coordinator
async function coordinator(o) {
  const startedAt = new Date().toISOString();
  const nWorkers = Math.max(1, Math.min(o.workers, o.viewers));
  const share = (total) => total / nWorkers; // each worker sends an equal share of each rate
  const seqCapacity = Math.ceil((o.chatRate / nWorkers) * o.duration) + 16;
  const parts = splitEven(o.viewers, nWorkers);
  const pool = forkWorkers(__filename, nWorkers, (w) => ({
    url: o.url, live: o.live, jwtSecret: o.jwtSecret, first: parts[w].first, count: parts[w].count, nWorkers,
    workerIndex: w, seqCapacity, connectConcurrency: o.connectConcurrency,
    senders: Math.max(1, Math.round(o.senders / nWorkers)), chatRate: share(o.chatRate),
    reactionRate: share(o.reactionRate), duration: o.duration, bodyBytes: o.bodyBytes, ackTimeout: o.ackTimeout,
    drainIdle: o.drainIdle, drainMax: o.drainMax,
  }), { tick: { unique: 0 } });
  const { workers } = pool;
  const deliveries = () => pool.total((w) => w.tick.unique);
  const waiting = (what) => () => `${what}: waiting (${deliveries()} chat deliveries so far)`;
  const waitFor = (pred, timeoutMs, what) => pool.waitFor(pred, timeoutMs, what, waiting(what), 5000);

  progress(`connecting ${o.viewers} viewers via ${nWorkers} worker(s) to ${o.url}/live, room live:${o.live}`);
  const { seconds: connectS, joined, errors: connectErrors } = await pool.allReady(
    o.connectTimeout * 1000, 'connect', waiting('connect'), 5000);
  progress(`joined ${joined}/${o.viewers} viewers in ${connectS.toFixed(1)}s`, { errors: connectErrors });
  if (joined === 0) throw new Error('no viewer joined: ' + JSON.stringify(connectErrors));
  pool.send({ type: 'warmup' });
  await waitFor(() => workers.every((w) => w.warm), 30000, 'warmup');
  await sleep(1000); // let the warmup messages drain

  const { t0 } = await pool.startAt(300, 'go', o.duration, 'publish_start');
  const ticker = setInterval(() => {
    const s = ((nowMs() - t0) / 1000).toFixed(1);
    progress(`t=${s}s chat deliveries=${deliveries()}`);
  }, 2000);
  await waitFor(() => workers.every((w) => w.sent), (o.duration + o.ackTimeout + 30) * 1000, 'send');
  clearInterval(ticker);
  const pubEnd = nowMs();
  out({ event: 'phase', phase: 'publish_end', t: pubEnd });
  const chatSent = pool.total((w) => w.sent.chat.sent);
  const chatOk = pool.total((w) => w.sent.chat.ok);
  const reactSent = pool.total((w) => w.sent.react.sent);
  const reactOk = pool.total((w) => w.sent.react.ok);
  const chatErrors = {}, reactErrors = {};
  for (const w of workers) {
    mergeCounts(chatErrors, w.sent.chat.errors);
    mergeCounts(reactErrors, w.sent.react.errors);
  }
  progress(`sending done: chat ${chatOk}/${chatSent} ok, reactions ${reactOk}/${reactSent} ok; draining`);
  const failed = workers.map((w) => w.sent.chat.failed);
  pool.send({ type: 'drain', acceptedTotal: chatOk, reactionsAccepted: reactOk, failed });
  await waitFor(() => workers.every((w) => w.result), (o.drainMax + 15) * 1000, 'drain');
  out({ event: 'phase', phase: 'drain_end', t: nowMs() });

  const hist = hNew(), ackHist = hNew();
  let delivered = 0, extra = 0, inWindow = 0, dups = 0, lastRecv = 0, disconnects = 0, badBody = 0, joinedEnd = 0;
  let burstFrames = 0, burstSum = 0, reactedMin = Infinity, maxBurstsPerViewerSec = 0, gotMin = Infinity;
  const drainEnds = {}, disconnectReasons = {};
  const results = workers.map((w) => w.result);
  for (const r of results) {
    hMerge(hist, r.hist); hMerge(ackHist, r.ackHist);
    delivered += r.delivered; extra += r.extra; inWindow += r.inWindow; dups += r.dups; badBody += r.badBody;
    disconnects += r.disconnects; joinedEnd += r.joinedViewers;
    if (r.lastRecv > lastRecv) lastRecv = r.lastRecv;
    burstFrames += r.burstFrames; burstSum += r.burstSum;
    if (r.reactedMin < reactedMin) reactedMin = r.reactedMin;
    if (r.gotMin < gotMin) gotMin = r.gotMin;
    if (r.maxBurstsPerViewerSec > maxBurstsPerViewerSec) maxBurstsPerViewerSec = r.maxBurstsPerViewerSec;
    addCount(drainEnds, r.drainEnd);
    mergeCounts(disconnectReasons, r.disconnectReasons);
  }
  const timeline = sumTimelines(results.map((r) => r.timeline));
  const expected = chatOk * joined;
  const spanS = lastRecv > t0 ? (lastRecv - t0) / 1000 : null;
  const drainS = lastRecv > 0 ? Math.max(0, (lastRecv - pubEnd) / 1000) : null;
  const lost = Math.max(0, expected - delivered);
  out({
    event: 'result', started_at: startedAt, url: o.url, live: o.live,
    viewers: o.viewers, workers: nWorkers, viewers_joined: joined, viewers_joined_at_end: joinedEnd,
    connect_s: r1(connectS), connect_errors: connectErrors, duration_s: o.duration,
    chat: {
      rate_target: o.chatRate, senders: o.senders, body_bytes: o.bodyBytes, sent: chatSent, accepted: chatOk,
      errors: chatErrors, ack_ms: hSummary(ackHist), expected, delivered, lost,
      delivered_of_unacked_sends: extra, received_per_viewer_min: gotMin === Infinity ? 0 : gotMin,
      loss_pct: expected ? r1((lost / expected) * 100) : null, duplicates: dups, bad_bodies: badBody,
      delivered_per_s: spanS ? Math.round(delivered / spanS) : 0,
      window_delivered_per_s: Math.round(inWindow / o.duration),
      offered_per_s: Math.round(expected / o.duration),
      latency_ms: hSummary(hist), drain_s: drainS === null ? null : r1(drainS), drain_end: drainEnds,
      timeline_per_s: timeline,
    },
    reactions: {
      rate_target: o.reactionRate, sent: reactSent, accepted: reactOk, errors: reactErrors,
      burst_frames_received: burstFrames,
      burst_frames_per_viewer: joined ? r1(burstFrames / joined) : null,
      burst_frames_per_viewer_per_s: joined ? r1(burstFrames / joined / (spanS || o.duration)) : null,
      max_bursts_one_viewer_one_s: maxBurstsPerViewerSec,
      reactions_per_frame: burstFrames ? r1(burstSum / burstFrames) : null,
      counted_per_viewer_mean: joined ? r1(burstSum / joined) : null,
      counted_per_viewer_min: reactedMin === Infinity ? 0 : reactedMin,
    },
    disconnects, disconnect_reasons: disconnectReasons,
  });
  await pool.close(500);
}

common.runMain(parseArgs(process.argv.slice(2)), runWorker, coordinator);
