"""End-to-end latency and throughput of ``/v1/chat/completions`` under concurrent clients.

    HF_HUB_OFFLINE=1 python benchmarks/serve_load.py --router /tmp/r-emb --engine llamacpp \
        --concurrency 1,10,100 --windows 0,10 --budget 4 --out benchmarks/results/serve_load.json

For each batching window (``--windows``, milliseconds; 0 = one request at a time) the script starts
``ttsopt serve`` as a subprocess on loopback, exactly as the README does (models loaded and warmed
before it listens), then for each concurrency level runs that many clients at once, each sending
its share of ``--requests`` distinct built-in arithmetic questions one after another, and records
the client-side latency of every request (p50, p99, mean), the throughput (requests / wall
time), failures, and from the server's ``/metrics`` the router calls it made and the questions per
call. The machine's CPU model and load average are recorded with the figures: on a shared CPU the
load moves the result more than anything else. Every run is bounded by ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/machine.py: this folder is no package
from machine import cpu_model, loadavg  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, window_ms: float, port: int) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "ttsopt.cli", "serve", "--router", str(args.router), "--port", str(port),
           "--batch-window-ms", str(window_ms), "--max-batch", str(args.max_batch)]
    for flag, value in (("--engine", args.engine), ("--pair", args.pair)):
        if value:
            cmd += [flag, value]
    log = open(args.log_dir / f"serve-window{window_ms:g}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ttsopt serve exited with {proc.returncode}; see {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"ttsopt serve did not answer /healthz within {args.startup_timeout} s")


def server_counters(url: str) -> dict[str, float]:
    import httpx

    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        for name in ('ttsopt_batch_size_count{op="solve"}', 'ttsopt_batch_size_sum{op="solve"}',
                     'ttsopt_tokens_total{kind="generated"}', 'ttsopt_tokens_total{kind="prompt"}',
                     'ttsopt_tokens_total{kind="prm"}'):
            if line.startswith(name + " "):
                out[name] = float(line.rsplit(" ", 1)[1])
    return out


async def run_clients(url: str, model: str, questions: list[str], clients: int, budget: int,
                      timeout: float) -> tuple[list[dict], float]:
    """``clients`` concurrent clients share ``questions`` (each takes the next one when done)."""
    import httpx

    todo = list(reversed(questions))
    results: list[dict] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as http:
        async def client() -> None:
            while todo:
                q = todo.pop()
                body = {"model": model, "messages": [{"role": "user", "content": q}], "budget": budget}
                t0 = time.perf_counter()
                try:
                    r = await http.post("/v1/chat/completions", json=body)
                    ok = r.status_code == 200
                    extra = r.json().get("ttsopt", {}) if ok else {}
                    results.append({"ok": ok, "status": r.status_code, "latency_s": time.perf_counter() - t0,
                                    "strategy": extra.get("decision", {}).get("strategy"),
                                    "batch_size": extra.get("batch_size")})
                except httpx.HTTPError as e:
                    results.append({"ok": False, "status": type(e).__name__, "latency_s": time.perf_counter() - t0})

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), timeout)
        return results, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--router", type=Path, required=True, help="router directory (`ttsopt train --out`)")
    ap.add_argument("--engine", default=None, help="transformers | llamacpp (ttsopt serve --engine)")
    ap.add_argument("--pair", default=None)
    ap.add_argument("--concurrency", default="1,10,100", help="comma-separated numbers of concurrent clients")
    ap.add_argument("--requests", default=None,
                    help="requests per concurrency level, comma-separated (default: 4 x clients, at most 100)")
    ap.add_argument("--windows", default="0,10", help="batching windows to compare, ms (0 = one at a time)")
    ap.add_argument("--budget", type=int, default=4, help="budget N of every request")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds one concurrency level may take")
    ap.add_argument("--startup-timeout", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=11, help="which built-in questions (a different set per level)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/serve_load.json"))
    ap.add_argument("--log-dir", type=Path, default=Path("/tmp"))
    args = ap.parse_args(argv)

    from ttsopt.data.loaders import load_problems

    levels = [int(x) for x in args.concurrency.split(",")]
    counts = ([int(x) for x in args.requests.split(",")] if args.requests
              else [min(100, 4 * c) if c > 1 else 8 for c in levels])
    if len(counts) != len(levels):
        ap.error("--requests needs one count per --concurrency level")
    windows = [float(x) for x in args.windows.split(",")]
    # every level of the built-in set, shuffled (seeded): a realistic mix of short and long questions
    pool = [p.question for p in load_problems(f"builtin:arith?n={-(-sum(counts) // 5)}&seed={args.seed}")]
    random.Random(args.seed).shuffle(pool)
    record = {"benchmark": "serve_load", "router": str(args.router), "pair": args.pair,
              "engine": args.engine or "the router's (its manifest's search engine)", "budget_n": args.budget,
              "cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
              "note": "client and server on one loopback host; the CPU is shared with other work (see loadavg)",
              "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
              "runs": []}
    for window in windows:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(args, window, port)
        try:
            import httpx

            model = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]
            offset = 0
            for clients, count in zip(levels, counts):
                questions = pool[offset:offset + count]  # distinct questions per level: no cache helps
                offset += count
                before, load0 = server_counters(url), loadavg()
                results, wall = asyncio.run(run_clients(url, model, questions, clients, args.budget, args.timeout))
                after = server_counters(url)
                lat = [r["latency_s"] for r in results if r["ok"]]
                calls = after.get('ttsopt_batch_size_count{op="solve"}', 0) - before.get(
                    'ttsopt_batch_size_count{op="solve"}', 0)
                solved = after.get('ttsopt_batch_size_sum{op="solve"}', 0) - before.get(
                    'ttsopt_batch_size_sum{op="solve"}', 0)
                run = {"batch_window_ms": window, "clients": clients, "requests": len(results),
                       "failed": sum(not r["ok"] for r in results), "wall_s": round(wall, 3),
                       "throughput_rps": round(len(lat) / wall, 4),
                       "latency_p50_s": round(percentile(lat, 50), 4), "latency_p99_s": round(percentile(lat, 99), 4),
                       "latency_mean_s": round(sum(lat) / len(lat), 4) if lat else None,
                       "router_calls": int(calls), "questions_per_call": round(solved / calls, 2) if calls else None,
                       "generated_tokens": int(after.get('ttsopt_tokens_total{kind="generated"}', 0)
                                               - before.get('ttsopt_tokens_total{kind="generated"}', 0)),
                       "strategies": sorted({r["strategy"] for r in results if r.get("strategy")}),
                       "loadavg_before": load0, "loadavg_after": loadavg()}
                record["runs"].append(run)
                print(json.dumps(run), flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    by = {(r["batch_window_ms"], r["clients"]): r for r in record["runs"]}
    record["batching_gain"] = [
        {"clients": c, "windows_ms": [windows[0], w],
         "throughput_ratio": round(by[(w, c)]["throughput_rps"] / by[(windows[0], c)]["throughput_rps"], 3)
         if by[(windows[0], c)]["throughput_rps"] else None,
         "p50_ratio": round(by[(w, c)]["latency_p50_s"] / by[(windows[0], c)]["latency_p50_s"], 3)}
        for c in levels for w in windows[1:] if (w, c) in by and (windows[0], c) in by]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
