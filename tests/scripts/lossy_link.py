#!/usr/bin/env python3
"""A userspace netem: forwards IP packets between two TUN devices, dropping a fraction and
delaying each one, both directions, through a bounded queue.

This machine's kernel has no sch_netem, so the loss and delay tests of docs/RELIABILITY.md use
this instead. `palisade_tests::LossyLink` (tests/src/lib.rs) starts it, moves one device into a
network namespace and addresses both ends; this script only creates the two devices (IFF_TUN |
IFF_NO_PI, not persistent: they vanish when it exits) and forwards.

    lossy_link.py --dev-a A --dev-b B --loss 0.3 --delay-ms 500 [--jitter-ms 50]
                  [--queue 4096] [--seed N] [--stats FILE] [--max-secs 900]

Prints "ready" on stdout once both devices exist. Stops by itself when stdin closes (the test
that started it ended), after --max-secs, or on SIGTERM. SIGUSR1 cuts the link (every packet
dropped: a partition, connections hang), SIGUSR2 heals it. Counters are written as JSON to
--stats about once a second and at exit.
"""

import argparse
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name):
    if len(name.encode()) > 15:
        sys.exit(f"lossy_link: device name {name!r} longer than 15 bytes")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as e:
        sys.exit(f"lossy_link: cannot create TUN device {name}: {e}")
    return fd


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dev-a", required=True)
    p.add_argument("--dev-b", required=True)
    p.add_argument("--loss", type=float, default=0.0, help="fraction dropped, each direction")
    p.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +/- around the delay")
    p.add_argument("--queue", type=int, default=4096, help="packets held at most, per direction")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stats", default=None)
    p.add_argument("--max-secs", type=float, default=900.0)
    a = p.parse_args()
    if not 0.0 <= a.loss <= 1.0:
        sys.exit(f"lossy_link: --loss {a.loss} is not a fraction between 0 and 1")
    if a.delay_ms < 0 or a.jitter_ms < 0 or a.jitter_ms > a.delay_ms:
        sys.exit("lossy_link: need 0 <= --jitter-ms <= --delay-ms")
    if a.queue < 1:
        sys.exit("lossy_link: --queue must be at least 1")

    rng = random.Random(a.seed)
    fds = {"a": open_tun(a.dev_a), "b": open_tun(a.dev_b)}
    other = {"a": "b", "b": "a"}
    # Per direction ("a" = read from A, written to B): forwarded, lost, cut, queue_full.
    counts = {d: {"forwarded": 0, "lost": 0, "cut": 0, "queue_full": 0} for d in "ab"}
    queues = {"a": [], "b": []}  # heaps of (due, seq, packet)
    held = {"a": 0, "b": 0}
    seq = 0
    state = {"cut": False, "stop": False}

    signal.signal(signal.SIGUSR1, lambda *_: state.update(cut=True))
    signal.signal(signal.SIGUSR2, lambda *_: state.update(cut=False))
    signal.signal(signal.SIGTERM, lambda *_: state.update(stop=True))

    def write_stats():
        if not a.stats:
            return
        tmp = a.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"a_to_b": counts["a"], "b_to_a": counts["b"], "cut": state["cut"]}, f)
        os.replace(tmp, a.stats)

    print("ready", flush=True)
    started = time.monotonic()
    last_stats = 0.0
    watch = [fds["a"], fds["b"], sys.stdin.fileno()]
    while not state["stop"] and time.monotonic() - started < a.max_secs:
        now = time.monotonic()
        # Deliver what is due.
        for d in "ab":
            q = queues[d]
            while q and q[0][0] <= now:
                _, _, pkt = heapq.heappop(q)
                held[d] -= 1
                try:
                    os.write(fds[other[d]], pkt)
                    counts[d]["forwarded"] += 1
                except OSError:
                    # The far device is down (e.g. between creation and configuration).
                    counts[d]["cut"] += 1
        due = [q[0][0] for q in queues.values() if q]
        timeout = max(0.0, min(due) - now) if due else 0.5
        timeout = min(timeout, 0.5)
        try:
            ready, _, _ = select.select(watch, [], [], timeout)
        except InterruptedError:
            continue
        if sys.stdin.fileno() in ready:
            if not os.read(sys.stdin.fileno(), 4096):
                break
        for d in "ab":
            if fds[d] not in ready:
                continue
            # Drain what the kernel holds, bounded per round so both directions get turns.
            for _ in range(256):
                try:
                    pkt = os.read(fds[d], 65536)
                except BlockingIOError:
                    break
                except OSError:
                    break
                if state["cut"]:
                    counts[d]["cut"] += 1
                elif rng.random() < a.loss:
                    counts[d]["lost"] += 1
                elif held[d] >= a.queue:
                    counts[d]["queue_full"] += 1
                else:
                    jitter = rng.uniform(-a.jitter_ms, a.jitter_ms) if a.jitter_ms else 0.0
                    due_at = time.monotonic() + (a.delay_ms + jitter) / 1000.0
                    seq += 1
                    heapq.heappush(queues[d], (due_at, seq, pkt))
                    held[d] += 1
        if now - last_stats >= 1.0:
            write_stats()
            last_stats = now
    write_stats()


if __name__ == "__main__":
    main()
