"""Checks that a cluster started by scripts/cluster.sh (nodes with --sfu-udp) routes the
participants of a room to one node THROUGH its nginx (run by scripts/test-cluster.sh).

  python3 scripts/lib/sfu_route_check.py --dir DIR

An SFU room's media lives on one node. deploy/nginx.conf routes a signaling client that names its
room in the URL (/signal/v1?room=R) by the room, so that a room's participants reach that node
directly; a participant that lands elsewhere still works (its node relays its signaling to the
media node, tested by `c10m-loadtest sfu --target` over the nodes), at the cost of a hop.

Participants of a room connect through nginx to /signal/v1?room=R from source addresses
127.0.3.1, 127.0.3.2, ... (addresses that routing by address spreads over the nodes), and join
with "mode":"sfu": every one lands on the same node (the nodes' /metrics) and is joined in SFU
mode. Every wait is for an event under a deadline. Exits 0 when everything holds, 1 with the
reason.
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
        # By room: every participant on one node, joined in SFU mode.
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
