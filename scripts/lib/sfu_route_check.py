"""Checks that a cluster started by scripts/cluster.sh (nodes with --sfu-udp) keeps each SFU room
on one node THROUGH its nginx (run by scripts/test-cluster.sh).

  python3 scripts/lib/sfu_route_check.py --dir DIR

An SFU room's media lives on one node, so deploy/nginx.conf routes a signaling client that names
its room in the URL (/signal/v1?room=R) by the room, and a node refuses an SFU join of a room
whose media is on another node (error 11).

1. Participants of a room connect through nginx to /signal/v1?room=R from source addresses
   127.0.3.1, 127.0.3.2, ... (addresses that routing by address spreads over the nodes), and join
   with "mode":"sfu": every one lands on the same node (the nodes' /metrics) and is joined in SFU
   mode.
2. The control: clients connect to /signal/v1 without the room, from 127.0.4.x (routed by
   address), until one lands on another node; its SFU join of R is refused with error 11.
3. R's participants leave (their connections close); the refused client's node then takes an SFU
   join of R (it retries while the leaves reach Redis): the refusal came from the room's
   presence, not from the node.

Every wait is for an event under a deadline. Exits 0 when everything holds, 1 with the reason.
"""

import argparse
import json
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_check import Cluster, Failure  # noqa: E402
from wsclient import ProtocolError, pump  # noqa: E402

ROOM = "sfu-route-check"
PARTICIPANTS = 8
MAX_SOURCES = 250


def log(msg):
    print(f"sfu-route-check: {msg}", flush=True)


def join(conn, room):
    """Sends an SFU join of `room` and returns the answer ("joined" or "error")."""
    conn.messages.clear()
    conn.send_text(json.dumps({"type": "join", "room": room, "mode": "sfu"}))

    def answered():
        return conn.closed or any(json.loads(m).get("type") in ("joined", "error")
                                  for m in conn.messages)

    pump([conn], answered, time.monotonic() + 10, f"{conn.name}: answer to join")
    for m in conn.messages:
        v = json.loads(m)
        if v.get("type") in ("joined", "error"):
            return v
    raise Failure(f"{conn.name}: closed before answering the join ({conn.closed})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    t0 = time.monotonic()
    cl = Cluster(args.dir)
    try:
        cl.health()
        # 1. By room: every participant on one node, joined in SFU mode.
        members = []
        for i in range(1, PARTICIPANTS + 1):
            c = cl.open("sig", f"127.0.3.{i}", f"/signal/v1?room={ROOM}")
            v = join(c, ROOM)
            if v.get("type") != "joined" or v.get("mode") != "sfu":
                raise Failure(f"{c.name} on {c.node}: join answered {v}")
            members.append(c)
        nodes = {c.node for c in members}
        if len(nodes) != 1:
            raise Failure(f"participants of one room landed on {sorted(nodes)}")
        home = nodes.pop()
        log(f"{PARTICIPANTS} participants of {ROOM} from 127.0.3.1-{PARTICIPANTS} all on {home}, "
            f"joined in SFU mode")

        # 2. The control: routed by address to another node, an SFU join of the room is refused.
        other = None
        for i in range(1, MAX_SOURCES + 1):
            c = cl.open("sig", f"127.0.4.{i}", "/signal/v1")
            if c.node != home:
                other = c
                break
            cl.drop(c)
        if other is None:
            raise Failure(f"no source address reached a node other than {home}")
        v = join(other, ROOM)
        if v.get("type") != "error" or v.get("code") != 11:
            raise Failure(f"{other.name} on {other.node}: SFU join of {ROOM} answered {v}, "
                          f"not error 11 (its media is on {home})")
        log(f"{other.name} on {other.node}, not routed by room: SFU join refused: {v['message']}")

        # 3. Once the room is empty, the other node takes it.
        for c in members:
            cl.drop(c)
        deadline = time.monotonic() + 15
        while True:
            c = cl.open("sig", other.source, "/signal/v1")
            if c.node != other.node:
                raise Failure(f"a second connection from {other.source} landed on {c.node}")
            v = join(c, ROOM)
            if v.get("type") == "joined" and v.get("mode") == "sfu":
                break
            if v.get("code") != 11 or time.monotonic() > deadline:
                raise Failure(f"{c.name} on {c.node}: SFU join of the emptied room answered {v}")
            cl.drop(c)
            time.sleep(0.1)
        log(f"after the room emptied, {c.node} took an SFU join of {ROOM}")
    finally:
        for c in cl.clients:
            c.close()
    log(f"passed in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    try:
        main()
    except (Failure, ProtocolError, TimeoutError, OSError, ValueError) as e:
        print(f"sfu-route-check: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
