#!/usr/bin/env python3
"""Kernel memory per idle loopback TCP socket, and tcp_mem pages per socket holding unread data.

usage: python3 scripts/measure-socket-memory.py [PAIRS]   (default 9000; needs 2*PAIRS+20 fds)

Opens PAIRS client/server pairs on 127.0.0.1, reads /proc/meminfo (Slab, split into SUnreclaim
and SReclaimable) and /proc/net/sockstat (TCP mem, in pages) before and after, then has every
client send 100 bytes that the server never reads. Prints bytes per socket, and how many
connections conntrack tracks meanwhile. Python's own objects
live in user space and are not counted. Kernel slab only: an epoll registration (epitem, ~128
bytes) and page tables come on top. An idle host gives the steadiest figures.
"""
import socket
import sys
import time


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, rest = line.split(":", 1)
            out[key] = int(rest.split()[0])  # kB
    return out


def tcp_mem_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                words = line.split()
                return int(words[words.index("mem") + 1])
    raise SystemExit("no TCP line in /proc/net/sockstat")


def main():
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    addr = listener.getsockname()
    time.sleep(0.5)
    m0, t0 = meminfo(), tcp_mem_pages()
    held = []
    for _ in range(pairs):
        client = socket.create_connection(addr)
        server, _ = listener.accept()
        held.append((client, server))
    time.sleep(1)
    m1, t1 = meminfo(), tcp_mem_pages()
    try:
        with open("/proc/sys/net/netfilter/nf_conntrack_count") as f:
            tracked = f.read().strip()
    except FileNotFoundError:
        tracked = "n/a (conntrack not loaded)"
    for client, _ in held:
        client.send(b"x" * 100)
    time.sleep(1)
    t2 = tcp_mem_pages()
    sockets = 2 * pairs
    def per_socket(key):
        return (m1[key] - m0[key]) * 1024 / sockets

    print(f"pairs: {pairs} ({sockets} sockets)")
    print(f"idle: Slab +{per_socket('Slab'):.0f} bytes/socket "
          f"(SUnreclaim +{per_socket('SUnreclaim'):.0f}, SReclaimable +{per_socket('SReclaimable'):.0f})")
    print(f"idle: tcp_mem +{t1 - t0} pages for {sockets} sockets")
    print(f"nf_conntrack_count with {pairs} connections open: {tracked}")
    print(f"100 unread bytes on {pairs} sockets: tcp_mem +{t2 - t1} pages "
          f"({(t2 - t1) / pairs:.2f} pages per socket holding data)")


if __name__ == "__main__":
    main()
