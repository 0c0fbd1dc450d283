// A tiny stand-in for `c10m serve` (a ws server that speaks just enough of protocol v1), for
// what a real server cannot be made to do on cue: stop pinging, close with a given code, hold a
// reply back, send live publications before a subscribe reply.
import { WebSocketServer } from "ws";

export class FakeServer {
  /** `onConnection(conn)` runs for each connection; `conn.token` is the `?token=` it came with. */
  static async start(onConnection) {
    const s = new FakeServer();
    s.wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise((r) => s.wss.once("listening", r));
    s.url = `ws://127.0.0.1:${s.wss.address().port}/connection/v1`;
    s.connections = [];
    s.wss.on("connection", (ws, req) => {
      const conn = new FakeConn(ws, new URL(req.url, "http://x").searchParams.get("token"));
      s.connections.push(conn);
      onConnection(conn);
    });
    return s;
  }

  close() {
    for (const c of this.connections) c.ws.terminate();
    return new Promise((r) => this.wss.close(r));
  }
}

export class FakeConn {
  constructor(ws, token) {
    this.ws = ws;
    this.token = token;
    this.received = []; // commands, parsed
    this.handlers = new Map(); // method -> (cmd) => void
    this.openedAt = Date.now();
    ws.on("message", (data) => {
      const cmd = JSON.parse(data.toString());
      this.received.push(cmd);
      this.handlers.get(cmd.method)?.(cmd);
    });
  }

  send(obj) {
    this.ws.send(JSON.stringify(obj));
  }

  connected({ pingMs = 25000, expires = 0, user = "u" } = {}) {
    this.send({ type: "connected", version: 1, client: "fake-1", user, expires, ping_ms: pingMs });
  }

  reply(id, result) {
    this.send({ id, result });
  }

  pub(channel, epoch, offset, data = offset) {
    this.send({ type: "pub", channel, epoch, offset, data });
  }

  on(method, fn) {
    this.handlers.set(method, fn);
  }
}
