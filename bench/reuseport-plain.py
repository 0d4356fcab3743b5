#!/usr/bin/env python3
"""Figure 3 without rcluster: is SO_REUSEPORT itself slower than one shared
listening socket here, for Node's own HTTP server?

    python3 bench/reuseport-plain.py [node binary ...]   (default: `node`)

For each Node binary, two plain Node processes (no cluster module, no
rcluster) serve hello world on 127.0.0.1 from sockets this script creates:

- reuseport: one SO_REUSEPORT socket per process (the kernel spreads new
  connections by a hash, one queue per process: what rcluster's `reuseport`
  policy does);
- shared: both processes accept on one socket (what node:cluster's
  SCHED_NONE does).

Load: `wrk -t1 -c32 -d5s -H 'Connection: close'` after a 1 s warm-up, 3
rounds, alternating. Prints the median req/s of each and their ratio. Python
creates the sockets because Node 20 cannot set SO_REUSEPORT (Node >= 22.12
can, with `listen({ reusePort: true })`). Every child is killed on exit.
"""

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

SERVER = (
    "require('http').createServer((q, r) => {"
    " r.writeHead(200, { 'content-type': 'text/plain', 'content-length': '11' });"
    " r.end('hello world'); })"
    ".listen({ fd: Number(process.env.BENCH_FD) }, () => process.stdout.write('up\\n'));"
)


def sockets(mode):
    """Listening sockets on one free port: two with SO_REUSEPORT, or one."""
    count = 2 if mode == "reuseport" else 1
    out = []
    port = 0
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if mode == "reuseport":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", port))
        s.listen(511)
        port = s.getsockname()[1]
        out.append(s)
    return out, port


def wrk(port, seconds):
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", "-H", "Connection: close", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=seconds + 30,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else float("nan")


def measure(node, mode):
    socks, port = sockets(mode)
    procs = []
    try:
        for i in range(2):
            fd = socks[i % len(socks)].fileno()
            procs.append(subprocess.Popen(
                [node, "-e", SERVER], env={**os.environ, "BENCH_FD": str(fd)},
                pass_fds=[fd], stdout=subprocess.PIPE, text=True,
            ))
        for p in procs:
            if p.stdout.readline().strip() != "up":
                raise RuntimeError(f"{node}: a server did not start")
        for s in socks:
            s.close()  # the servers hold them now
        wrk(port, 1)
        return wrk(port, 5)
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
        for s in socks:
            s.close()


def main():
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (apt-get install wrk)")
    nodes = sys.argv[1:] or ["node"]
    for node in nodes:
        version = subprocess.run([node, "-v"], capture_output=True, text=True, timeout=30).stdout.strip()
        results = {"reuseport": [], "shared": []}
        for r in range(3):
            order = ["reuseport", "shared"] if r % 2 == 0 else ["shared", "reuseport"]
            for mode in order:
                results[mode].append(measure(node, mode))
        med = {k: statistics.median(v) for k, v in results.items()}
        rounds = ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(results["reuseport"], results["shared"]))
        print(f"node {version}: reuseport {med['reuseport']:.0f} req/s, shared {med['shared']:.0f} req/s, "
              f"reuseport / shared {med['reuseport'] / med['shared']:.2f}x (rounds {rounds})")


if __name__ == "__main__":
    main()
