#!/usr/bin/env python3
"""Checks that two servers speak c10m's /pubsub protocol byte for byte alike.

    check-pubsub.py REFERENCE_ADDR CANDIDATE_ADDR      (e.g. 127.0.0.1:9001 127.0.0.1:9002)

The servers must run one shard (thread). Runs one script of commands against each server (subscription by query string, sub, unsub,
pub with and without payload, a publisher receiving its own message, malformed commands, a
binary command with invalid UTF-8) and compares what every connection received: opcode and
bytes of each message, in order. Prints the reference transcript; exit status 1 and the
differences when the candidate's differs. Standard library only: a minimal RFC 6455 client.
"""

import os
import socket
import struct
import sys

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class Client:
    def __init__(self, addr, path):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.buf = b""
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"{addr}{path}: closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"{addr}{path}: {head.splitlines()[0]!r}")

    def send(self, payload, opcode=TEXT):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def messages_until(self, marker):
        """Data messages (opcode, payload) up to the text message `marker`, left out."""
        got = []
        while True:
            self._need(2)
            b0, b1 = self.buf[0], self.buf[1]
            n, at = b1 & 0x7F, 2
            if n == 126:
                self._need(4)
                n, at = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                self._need(10)
                n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
            self._need(at + n)
            payload, self.buf = self.buf[at : at + n], self.buf[at + n :]
            opcode = b0 & 0x0F
            if opcode == PING:
                self.send(payload, PONG)
            elif (opcode, payload) == (TEXT, marker):
                return got
            elif opcode in (TEXT, BINARY):
                got.append((opcode, payload))
            else:
                raise ConnectionError(f"opcode {opcode} {payload!r} before {marker!r}")


def transcript(addr):
    lines = []
    # After each step b publishes a barrier on topic `sync`, to which both are subscribed: one
    # shard delivers in publish order, so what the step caused arrives before the barrier.
    a = Client(addr, "/pubsub?topic=t&topic=u&other=x&topic=bad%20name&topic=sync")
    b = Client(addr, "/pubsub")
    b.send(b"sub sync")
    if b.messages_until(b"ok sub sync") != []:
        raise ConnectionError(f"{addr}: unexpected messages before `ok sub sync`")
    steps = [
        (b, b"sub v", TEXT),
        (b, b"pub t hello world", TEXT),
        (b, b"pub u", TEXT),
        (b, b"pub t ", TEXT),
        (a, b"pub t to myself", TEXT),
        (b, b"pub v for b", TEXT),
        (b, b"unsub v", TEXT),
        (b, b"unsub v", TEXT),
        (b, b"pub v after unsub", TEXT),
        (b, b"pub t binary in, binary out", BINARY),
        (b, b"pub \xff\xfe x", BINARY),
        (b, b"pub " + b"y" * 129 + b" long topic", TEXT),
        (b, b"pub " + b"z" * 128 + b" longest topic", TEXT),
        (b, b"sub", TEXT),
        (b, b"hello", TEXT),
        (b, b"", TEXT),
        # Near /pubsub's 64 KiB message limit (both servers take it; past it both close).
        (b, b"pub t " + b"p" * 65000, TEXT),
    ]
    for i, (who, payload, opcode) in enumerate(steps):
        who.send(payload, opcode)
        b.send(b"pub sync %d" % i)
        for name, c in (("a", a), ("b", b)):
            for op, got in c.messages_until(b"msg sync %d" % i):
                lines.append((i, "a" if who is a else "b", payload, name, op, got))
    return lines


def show(line):
    if line is None:
        return "(nothing)"
    i, who, sent, name, op, got = line
    if len(got) > 80:
        got = got[:60] + b"...(%d bytes)" % len(got)
    return f"step {i} ({who} sent {sent[:40]!r}): {name} got opcode {op} {got!r}"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)

    def run(addr):
        try:
            return transcript(addr)
        except OSError as e:  # ConnectionError, and a timeout: 5 s without an expected message
            sys.exit(f"check-pubsub: {addr}: {e!r}")

    ref, cand = run(sys.argv[1]), run(sys.argv[2])
    print("\n".join(map(show, ref)))
    if ref != cand:
        print(f"\ncheck-pubsub: {sys.argv[2]} differs from {sys.argv[1]}:", file=sys.stderr)
        for i in range(max(len(ref), len(cand))):
            r = ref[i] if i < len(ref) else None
            c = cand[i] if i < len(cand) else None
            if r != c:
                print(f"  reference: {show(r)}\n  candidate: {show(c)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
