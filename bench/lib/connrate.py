#!/usr/bin/env python3
"""Connection-setup benchmark driver shared by bench/ssh and bench/frontdoor.

usage: connrate.py N WORKERS TIMEOUT_S -- COMMAND...

Runs COMMAND (an `ssh ... true` line) N times split over WORKERS parallel workers,
each run bounded by TIMEOUT_S seconds, and prints one line:
    n=.. workers=.. ok=.. failed=.. wall_s=.. conn_per_s=.. p50_ms=.. p90_ms=.. max_ms=..
conn_per_s counts successful runs over wall time. Latency is per run (fork/exec of ssh included).
An argument containing "{i}" has it replaced by the run's number (1..N), e.g. `-b 127.0.2.{i}` to give
each run its own loopback source address.
"""
import subprocess
import sys
import threading
import time


def main() -> int:
    sep = sys.argv.index("--")
    n, workers, timeout_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    cmd = sys.argv[sep + 1:]
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    counter = [0]

    def worker() -> None:
        while True:
            with lock:
                if counter[0] >= n:
                    return
                counter[0] += 1
                index = counter[0]
            argv = [a.replace("{i}", str(index)) for a in cmd]
            start = time.perf_counter()
            try:
                rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, timeout=timeout_s).returncode
            except subprocess.TimeoutExpired:
                rc = -1
            elapsed = time.perf_counter() - start
            with lock:
                if rc == 0:
                    latencies.append(elapsed)
                else:
                    failures[0] += 1

    wall_start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall_start
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    print(f"n={n} workers={workers} ok={len(latencies)} failed={failures[0]} wall_s={wall:.2f} "
          f"conn_per_s={len(latencies) / wall:.1f} p50_ms={pct(0.5):.1f} p90_ms={pct(0.9):.1f} "
          f"max_ms={(latencies[-1] * 1000 if latencies else float('nan')):.1f}")
    return 0 if failures[0] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
