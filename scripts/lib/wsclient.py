"""A minimal WebSocket client (RFC 6455) on the Python 3 standard library, for the scripts' tests.

Enough for text protocols such as /pubsub: the opening handshake (Sec-WebSocket-Accept checked),
masked text frames out, unmasked frames in (fragments joined, pings answered, close echoed),
many connections read together by `pump` under a deadline. Not a general client: no extensions,
no TLS, no backpressure beyond the kernel's buffers.
"""

import base64
import hashlib
import os
import selectors
import socket
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class ProtocolError(Exception):
    pass


class Conn:
    """One client connection. `messages` collects the text messages received, in order; `closed`
    says why the connection ended (None while open)."""

    def __init__(self, host, port, path="/", source=None, timeout=10.0, name=None):
        self.name = name or f"{source or 'client'}->{host}:{port}{path}"
        self.source = source
        self.messages = []
        self.closed = None
        self._buf = bytearray()
        self._fragments = None
        src = (source, 0) if source else None
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=src)
        try:
            self._handshake(host, port, path, timeout)
        except BaseException:
            self.sock.close()
            raise

    def _handshake(self, host, port, path, timeout):
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (path.encode(), host.encode(), port, key)
        )
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self._buf:
            if time.monotonic() > deadline or len(self._buf) > 16384:
                raise ProtocolError(f"{self.name}: no complete response head")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ProtocolError(f"{self.name}: closed during the handshake: {bytes(self._buf)!r}")
            self._buf += chunk
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        self._buf = bytearray(rest)  # a frame may follow the head at once
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise ProtocolError(f"{self.name}: handshake refused: {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        want = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != want:
            raise ProtocolError(f"{self.name}: bad Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r}")

    def _send_frame(self, opcode, payload):
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        masked = (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big") if n else b""
        self.sock.sendall(head + mask + masked)

    def send_text(self, text):
        self._send_frame(0x1, text.encode())

    def close(self, code=1000):
        """Sends a close frame (when still open) and closes the socket."""
        if self.closed is None:
            try:
                self._send_frame(0x8, struct.pack("!H", code))
            except OSError:
                pass
            self.closed = "closed by us"
        self.sock.close()

    def fileno(self):
        return self.sock.fileno()

    def _on_readable(self):
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, ConnectionAbortedError) as e:
            self.closed = f"reset ({e})"
            return
        if not chunk:
            self.closed = self.closed or "EOF"
            return
        self._buf += chunk
        while self.closed is None and self._parse_one():
            pass

    def _parse_one(self):
        b = self._buf
        if len(b) < 2:
            return False
        fin, opcode, masked, n = b[0] & 0x80, b[0] & 0x0F, b[1] & 0x80, b[1] & 0x7F
        at = 2
        if n == 126:
            if len(b) < 4:
                return False
            (n,) = struct.unpack_from("!H", b, 2)
            at = 4
        elif n == 127:
            if len(b) < 10:
                return False
            (n,) = struct.unpack_from("!Q", b, 2)
            at = 10
        if masked:
            raise ProtocolError(f"{self.name}: a masked frame from the server")
        if len(b) < at + n:
            return False
        payload = bytes(b[at:at + n])
        del b[:at + n]
        if opcode == 0x9:
            self._send_frame(0xA, payload)
        elif opcode == 0xA:
            pass
        elif opcode == 0x8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            try:
                self._send_frame(0x8, payload[:2])
            except OSError:
                pass
            self.closed = f"close frame {code}"
        elif opcode in (0x1, 0x2, 0x0):
            if opcode != 0x0:
                self._fragments = bytearray()
            if self._fragments is None:
                raise ProtocolError(f"{self.name}: a continuation frame with no message")
            self._fragments += payload
            if fin:
                self.messages.append(self._fragments.decode("utf-8", "replace"))
                self._fragments = None
        else:
            raise ProtocolError(f"{self.name}: opcode {opcode}")
        return True


def pump(conns, until, deadline, what):
    """Reads every open connection of `conns` until `until()` is true; raises TimeoutError naming
    `what` when the monotonic `deadline` passes first."""
    sel = selectors.DefaultSelector()
    try:
        while True:
            if until():
                return
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(what)
            open_ = [c for c in conns if c.closed is None]
            for c in open_:
                try:
                    sel.register(c, selectors.EVENT_READ, c)
                except KeyError:
                    pass
            for key in list(sel.get_map().values()):
                if key.data.closed is not None:
                    sel.unregister(key.fileobj)
            if not open_:
                time.sleep(min(0.05, max(0.0, deadline - now)))
                continue
            for key, _ in sel.select(timeout=min(0.2, max(0.0, deadline - now))):
                key.data._on_readable()
    finally:
        sel.close()
