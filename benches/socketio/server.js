// The Socket.IO peer of scripts/bench-socketio.sh: the smallest pub/sub c10m's /pubsub and
// /connection/v1 are compared with. A client emits `sub` (topic) and is answered
// `subscribed` (topic); `pub` (topic, payload) reaches every subscriber of the topic, on every
// node when REDIS_URL names a Redis (the official Redis adapter), as the event `msg` (payload).
//
//   PORT=9101 [REDIS_URL=redis://127.0.0.1:6379] node server.js
//
// WebSocket transport only (no long-polling), no per-message compression, as c10m runs.
'use strict';
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');
const http = require('http');

async function main() {
  const port = Number(process.env.PORT || 9101);
  const server = http.createServer();
  const io = new Server(server, {
    transports: ['websocket'],
    serveClient: false,
    perMessageDeflate: false,
    pingInterval: 25000,
    pingTimeout: 20000,
  });
  if (process.env.REDIS_URL) {
    const pub = createClient({ url: process.env.REDIS_URL });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub));
  }
  io.on('connection', (socket) => {
    socket.on('sub', (topic) => {
      if (typeof topic !== 'string') return;
      socket.join(topic);
      socket.emit('subscribed', topic);
    });
    socket.on('pub', (topic, payload) => {
      if (typeof topic !== 'string') return;
      io.to(topic).emit('msg', payload);
    });
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  console.log(`socketio: listening on 127.0.0.1:${server.address().port}${process.env.REDIS_URL ? ' with the Redis adapter' : ''}`);
}

main().catch((e) => {
  console.error('socketio:', e);
  process.exit(1);
});
