#!/usr/bin/env node
// "node" baseline for bench/fanout: a plain socket.io 4.8 server exposing the
// same surface the benchmark uses on the project server:
//   - GET  /health                 -> 200
//   - namespace /feed, event "room:join" {room} -> ack {ok: true, data: {room}}
//   - POST /v1/events {type, subjects, payload} -> 202 {success, data: {id}}
//     and emits `type` with envelope {id, type, actor, subjects, payload, ts}
//     to every room in `subjects` on /feed.
// No persistence, no auth checks (the Authorization header is accepted as is).
'use strict';

const http = require('http');
const crypto = require('crypto');
const { Server } = require('socket.io');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const host = arg('--host', '127.0.0.1');
const port = parseInt(arg('--port', '8080'), 10);

function send(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

let io;
const httpServer = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/health') {
    return send(res, 200, { success: true, data: { status: 'ok' } });
  }
  if (req.method === 'POST' && req.url === '/v1/events') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (e) {
        return send(res, 400, { success: false, error: { code: 'bad_json', message: String(e) } });
      }
      if (!body || typeof body.type !== 'string' || !Array.isArray(body.subjects) || body.subjects.length === 0) {
        return send(res, 422, { success: false, error: { code: 'validation', message: 'type and subjects required' } });
      }
      const env = {
        id: crypto.randomUUID(),
        type: body.type,
        actor: { type: 'api_key', id: 'bench' },
        subjects: body.subjects,
        payload: body.payload || {},
        ts: new Date().toISOString(),
      };
      io.of('/feed').to(body.subjects).emit(body.type, env);
      send(res, 202, { success: true, data: { id: env.id } });
    });
    return;
  }
  // socket.io handles /socket.io/ itself; anything else is 404
  if (!req.url.startsWith('/socket.io/')) send(res, 404, { success: false, error: { code: 'not_found' } });
});

io = new Server(httpServer, { serveClient: false, cors: { origin: '*' } });
io.of('/feed').on('connection', (socket) => {
  socket.on('room:join', (data, ack) => {
    const room = data && typeof data.room === 'string' ? data.room : null;
    if (!room) {
      if (typeof ack === 'function') ack({ ok: false, error: { code: 'validation', message: 'room required' } });
      return;
    }
    socket.join(room);
    if (typeof ack === 'function') ack({ ok: true, data: { room } });
  });
});

httpServer.listen(port, host, () => {
  console.log(`node socket.io ${require('socket.io/package.json').version} baseline listening on http://${host}:${port}`);
});

function shutdown() {
  io.close();
  httpServer.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
