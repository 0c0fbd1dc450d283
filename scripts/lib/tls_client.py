"""wss:// against `c10m serve --tls-cert --tls-key --deflate` with an independent client:
Python's ssl module and the websockets library (which offers permessage-deflate, so its
compression is checked against ours in both directions).

usage: tls_client.py ADDR PID CERT KEY NEXT_CERT NEXT_KEY

Checks, failing with a message on the first that does not hold:
  - the certificate is verified for "localhost", ALPN selects http/1.1, deflate is negotiated;
  - /echo returns text, binary, large compressible and incompressible messages unchanged;
  - /pubsub: a publication reaches a subscriber on another connection;
  - SIGHUP with NEXT_CERT/NEXT_KEY copied over CERT/KEY: new handshakes present the new
    certificate, a connection opened before the reload keeps working, and a client trusting
    only the old certificate is refused.
"""

import asyncio
import os
import shutil
import signal
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


def fail(msg):
    print(f"tls_client: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def peer_cert(ws):
    return ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)


def pem_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


async def open_ws(addr, path, cafile):
    return await connect(
        f"wss://{addr}{path}",
        ssl=context(cafile),
        server_hostname="localhost",
        max_size=None,
        open_timeout=10,
    )


async def echo_checks(ws):
    sslobj = ws.transport.get_extra_info("ssl_object")
    if sslobj.selected_alpn_protocol() != "http/1.1":
        fail(f"ALPN selected {sslobj.selected_alpn_protocol()!r}")
    ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
    if "permessage-deflate" not in ext:
        fail(f"deflate not negotiated: {ext!r}")
    messages = [
        "hello",
        "é" * 1000,
        b"\x00\xff" * 10,
        "abc" * 100_000,  # 300 kB, compresses well
        os.urandom(200_000),  # incompressible
    ] + [f"small {i}" for i in range(200)]
    for m in messages:
        await ws.send(m)
        got = await asyncio.wait_for(ws.recv(), 10)
        if got != m:
            fail(f"echo of a {type(m).__name__} of {len(m)} changed")
    return len(messages)


async def pubsub_check(addr, cafile):
    sub = await open_ws(addr, "/pubsub", cafile)
    pub = await open_ws(addr, "/pubsub", cafile)
    await sub.send("sub tls")
    if await asyncio.wait_for(sub.recv(), 10) != "ok sub tls":
        fail("no ok sub")
    await pub.send("pub tls " + "x" * 5000)
    got = await asyncio.wait_for(sub.recv(), 10)
    if got != "msg tls " + "x" * 5000:
        fail(f"publication arrived as {got[:40]!r}")
    await sub.close()
    await pub.close()


async def main():
    addr, pid, cert, key, next_cert, next_key = sys.argv[1:7]
    pid = int(pid)
    old_der, new_der = pem_der(cert), pem_der(next_cert)
    # Copies of the pairs: CERT/KEY are overwritten below.
    old_ca = cert + ".old"
    shutil.copy(cert, old_ca)

    ws = await open_ws(addr, "/echo", old_ca)
    if peer_cert(ws) != old_der:
        fail("the server presented another certificate")
    n = await echo_checks(ws)
    await pubsub_check(addr, old_ca)

    # Reload: the files change, SIGHUP; the open connection stays.
    shutil.copy(next_cert, cert)
    shutil.copy(next_key, key)
    os.kill(pid, signal.SIGHUP)
    for _ in range(100):
        try:
            probe = await open_ws(addr, "/echo", next_cert)
        except (ssl.SSLError, OSError, InvalidStatus):
            await asyncio.sleep(0.1)
            continue
        if peer_cert(probe) != new_der:
            fail("a certificate that is neither old nor new")
        await probe.send("after reload")
        if await asyncio.wait_for(probe.recv(), 10) != "after reload":
            fail("echo after reload")
        await probe.close()
        break
    else:
        fail("the new certificate was not served within 10 s of SIGHUP")
    await ws.send("still here")
    if await asyncio.wait_for(ws.recv(), 10) != "still here":
        fail("the connection opened before the reload stopped echoing")
    await ws.close()
    try:
        stale = await open_ws(addr, "/echo", old_ca)
    except ssl.SSLCertVerificationError:
        pass
    else:
        await stale.close()
        fail("a client trusting only the old certificate was accepted after the reload")
    print(f"tls_client: ok ({n} echoes, pubsub, reload with an open connection)")


asyncio.run(main())
