"""Checks a cluster started by scripts/cluster.sh THROUGH its nginx (run by scripts/test-cluster.sh).

  python3 scripts/lib/cluster_check.py --dir DIR [--kill node2] [--messages 1000]

1. Subscribers to one topic connect through nginx from source addresses 127.0.1.1, 127.0.1.2,
   ... (`hash $remote_addr consistent` spreads them) until every node holds at least three. Each
   connection is placed on its node by the node's /metrics (c10m_connections goes up by one on
   exactly one node), and a second connection from an address already seen must land on the same
   node (sticky routing). Two publishers connect from 127.0.2.x, on two different nodes.
2. Both publishers publish M numbered messages; every subscriber must receive each once and in
   each publisher's order (a gap, duplicate or reordering fails at once).
3. `kill -9` of one node: exactly the clients on it are disconnected; the others' /health stays
   `ok`. Those clients reconnect through nginx from the same addresses, land on the other nodes,
   subscribe again, and every subscriber (survivors and reconnected) gets M more messages from
   each publisher once and in order, then one last message each (a fence: a stray duplicate of the
   round before would arrive ahead of it and fail the check).

Every wait is for an event under a generous deadline; nothing sleeps for a fixed time. Exits 0
when everything holds, 1 with the reason otherwise.
"""

import argparse
import http.client
import os
import signal
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wsclient import Conn, ProtocolError, pump  # noqa: E402

TOPIC = "news"
MIN_PER_NODE = 3  # subscribers on every node
MAX_SOURCES = 250  # addresses tried before giving up on spreading them


class Failure(Exception):
    pass


def log(msg):
    print(f"cluster-check: {msg}", flush=True)


def wait_for(cond, seconds, what):
    """Polls `cond` (which returns a value, or None to keep waiting) until it gives a value."""
    deadline = time.monotonic() + seconds
    while True:
        v = cond()
        if v is not None:
            return v
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {seconds} s: {what}")
        time.sleep(0.02)


def http_get(addr, path):
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def proc_start(pid):
    """The start time of a live (not zombie) process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else fields[19]


class Cluster:
    def __init__(self, dir_):
        self.procs = {}
        with open(os.path.join(dir_, "procs")) as f:
            for line in f:
                name, pid, start, addr, metrics = line.split()
                self.procs[name] = dict(pid=int(pid), start=start, addr=addr, metrics=metrics)
        self.alive = sorted(n for n in self.procs if n.startswith("node"))
        host, port = self.procs["nginx"]["addr"].rsplit(":", 1)
        self.nginx = (host, int(port))
        self.clients = []  # every open client: Conn with .kind ('sub'/'pub') and .node

    def connections(self, node):
        status, body = http_get(self.procs[node]["metrics"], "/metrics")
        if status != 200:
            raise Failure(f"{node} /metrics answered {status}")
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in body.splitlines()
                   if line.startswith("c10m_connections{"))

    def counts(self):
        return {n: self.connections(n) for n in self.alive}

    def expected_counts(self):
        want = {n: 0 for n in self.alive}
        for c in self.clients:
            want[c.node] += 1
        return want

    def check_counts(self):
        """Each live node's c10m_connections is the number of our clients placed on it."""
        want = self.expected_counts()
        got = wait_for(lambda: (lambda c: c if c == want else None)(self.counts()), 10,
                       f"connections per node to be {want}")
        return got

    def open(self, kind, source, path="/pubsub"):
        """Opens a client of `path` through nginx from `source` and finds the node it landed on
        (a "sub" then subscribes to the topic)."""
        before = self.counts()
        conn = Conn(*self.nginx, path, source=source, name=f"{kind} {source}")
        conn.kind = kind

        def landed():
            after = self.counts()
            diff = {n: after[n] - before[n] for n in after}
            moved = {n: d for n, d in diff.items() if d}
            if not moved:
                return None
            if len(moved) != 1 or list(moved.values()) != [1]:
                raise Failure(f"{conn.name}: connections changed by {moved}, not one new connection")
            return next(iter(moved))

        conn.node = wait_for(landed, 10, f"{conn.name} to show in a node's /metrics")
        self.clients.append(conn)
        if kind == "sub":
            conn.send_text(f"sub {TOPIC}")
            pump([conn], lambda: conn.messages or conn.closed, time.monotonic() + 10,
                 f"{conn.name}: answer to sub")
            if conn.messages != [f"ok sub {TOPIC}"]:
                raise Failure(f"{conn.name}: sub answered {conn.messages} ({conn.closed or 'open'})")
            conn.messages.clear()
        return conn

    def drop(self, conn):
        """Closes a client and waits until its node no longer counts it."""
        conn.close()
        self.clients.remove(conn)
        self.check_counts()

    def health(self):
        for n in self.alive:
            status, body = http_get(self.procs[n]["metrics"], "/health")
            if status != 200 or body.strip() != "ok":
                raise Failure(f"{n} /health: {status} {body.strip()!r}")

    def subs(self):
        return [c for c in self.clients if c.kind == "sub"]

    def pubs(self):
        return sorted((c for c in self.clients if c.kind == "pub"), key=lambda c: c.label)

    def spread(self):
        per = {n: sum(1 for c in self.subs() if c.node == n) for n in self.alive}
        return ", ".join(f"{n} {k}" for n, k in per.items())


def place_subscribers(cl):
    per = {n: 0 for n in cl.alive}
    first = {}  # node -> the first source placed on it
    for i in range(1, MAX_SOURCES + 1):
        if min(per.values()) >= MIN_PER_NODE:
            break
        source = f"127.0.1.{i}"
        c = cl.open("sub", source)
        per[c.node] += 1
        first.setdefault(c.node, source)
    if min(per.values()) < MIN_PER_NODE:
        raise Failure(f"{MAX_SOURCES} source addresses did not reach every node: {per}")
    # Sticky: another connection from a source already placed lands on the same node.
    for node, source in sorted(first.items()):
        c = cl.open("sub", source)
        if c.node != node:
            raise Failure(f"a second connection from {source} landed on {c.node}, the first on {node}")
    log(f"{len(cl.subs())} subscribers through nginx: {cl.spread()}; a second connection from "
        f"{', '.join(sorted(first.values()))} landed where the first did")


def place_publishers(cl):
    a = cl.open("pub", "127.0.2.1")
    a.label = "A"
    for i in range(2, MAX_SOURCES + 1):
        b = cl.open("pub", f"127.0.2.{i}")
        if b.node != a.node:
            b.label = "B"
            log(f"publishers: A from {a.source} on {a.node}, B from {b.source} on {b.node}")
            return
        cl.drop(b)
    raise Failure("no second publisher address landed on another node")


def run_round(cl, tag, count):
    """Each publisher publishes `count` messages `LABEL.tag.i`; every subscriber must get each
    once, in order per publisher, and nothing else."""
    subs, pubs = cl.subs(), cl.pubs()
    for s in subs:
        s.next = {p.label: 0 for p in pubs}
        s.cursor = 0

    def check(s):
        for m in s.messages[s.cursor:]:
            s.cursor += 1
            prefix = f"msg {TOPIC} "
            parts = m[len(prefix):].split(".") if m.startswith(prefix) else []
            if len(parts) != 3 or parts[0] not in s.next or parts[1] != tag:
                raise Failure(f"{s.name} on {s.node}: unexpected {m!r} in round {tag}")
            want = s.next[parts[0]]
            if int(parts[2]) != want:
                raise Failure(f"{s.name} on {s.node}: {m!r} where {parts[0]}.{tag}.{want} was due "
                              f"(a gap, duplicate or reordering)")
            s.next[parts[0]] = want + 1
        return all(v == count for v in s.next.values())

    start = time.monotonic()
    for i in range(count):
        for p in pubs:
            p.send_text(f"pub {TOPIC} {p.label}.{tag}.{i}")
    open_ = subs + pubs
    try:
        pump(open_, lambda: all(check(s) for s in subs), start + 60, "")
    except TimeoutError:
        short = [f"{s.name} on {s.node} has {s.next}" for s in subs if not check(s)]
        raise Failure(f"round {tag}: after 60 s, {len(short)} of {len(subs)} subscribers still lack "
                      f"messages of the {count} per publisher: " + "; ".join(short[:6]))
    lost = [c.name for c in open_ if c.closed]
    if lost:
        raise Failure(f"round {tag}: connections ended: {lost}")
    for s in subs:
        s.messages.clear()
    return time.monotonic() - start


def kill_node(cl, victim):
    p = cl.procs[victim]
    if proc_start(p["pid"]) != p["start"]:
        raise Failure(f"{victim} (pid {p['pid']}) is not the process cluster.sh started")
    on_victim = [c for c in cl.clients if c.node == victim]
    others = [c for c in cl.clients if c.node != victim]
    os.kill(p["pid"], signal.SIGKILL)
    wait_for(lambda: True if proc_start(p["pid"]) != p["start"] else None, 10, f"{victim} to die")
    cl.alive.remove(victim)
    start = time.monotonic()
    pump(cl.clients, lambda: all(c.closed for c in on_victim), start + 20,
         f"the {len(on_victim)} clients on {victim} to be disconnected by nginx")
    cut = [c.name for c in others if c.closed]
    if cut:
        raise Failure(f"clients on other nodes were disconnected too: {cut}")
    cl.health()
    log(f"kill -9 {victim}: its {len(on_victim)} clients disconnected in "
        f"{time.monotonic() - start:.2f} s, the {len(others)} others stayed; /health of "
        f"{', '.join(cl.alive)}: ok")
    return on_victim


def reconnect(cl, gone):
    start = time.monotonic()
    for old in gone:
        cl.clients.remove(old)
        old.close()
        new = cl.open(old.kind, old.source)
        if hasattr(old, "label"):
            new.label = old.label
        if new.node not in cl.alive:
            raise Failure(f"{new.name} landed on {new.node}")
    cl.check_counts()
    moved = ", ".join(f"{c.source}->{c.node}" for c in cl.clients if any(c.source == o.source for o in gone))
    log(f"{len(gone)} clients reconnected through nginx in {time.monotonic() - start:.2f} s and "
        f"subscribed again: {moved}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--kill", default="node2")
    ap.add_argument("--messages", type=int, default=1000)
    args = ap.parse_args()
    t0 = time.monotonic()
    cl = Cluster(args.dir)
    if args.kill not in cl.alive:
        raise Failure(f"no {args.kill} in {args.dir}/procs")
    try:
        cl.health()
        place_subscribers(cl)
        place_publishers(cl)
        got = cl.check_counts()
        log(f"/metrics c10m_connections per node matches the placement: {got}")

        took = run_round(cl, "1", args.messages)
        log(f"round 1: {len(cl.subs())} subscribers got {args.messages} messages from each of "
            f"2 publishers once and in order ({took:.2f} s)")

        gone = kill_node(cl, args.kill)
        reconnect(cl, gone)
        log(f"subscribers now: {cl.spread()}")

        took = run_round(cl, "2", args.messages)
        run_round(cl, "3", 1)
        cl.health()
        log(f"round 2 after the kill: {len(cl.subs())} subscribers got {args.messages} messages "
            f"from each publisher once and in order ({took:.2f} s), then the fence; /health ok")
    finally:
        for c in cl.clients:
            c.close()
    log(f"passed in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    try:
        main()
    except (Failure, ProtocolError, TimeoutError, OSError) as e:
        print(f"cluster-check: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
