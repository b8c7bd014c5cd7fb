"""The same 20 problems through llama-cpp-python's OpenAI-compatible server and through the in-process
llama.cpp engine: accuracy and wall time per strategy (issue #27).

    python3 benchmarks/server_vs_local.py --problems 20 --out benchmarks/results/server_vs_local.json

Starts ``python -m llama_cpp.server`` on loopback with the embedded SmolLM2 GGUF (one request at a time),
runs CoT, majority@4 and Best-of-4 (calc PRM) with the same seeds on both, and records the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, loadavg  # noqa: E402

from ttsopt.data import load_problems  # noqa: E402
from ttsopt.search import Strategy  # noqa: E402
from ttsopt.search.engines.models import preset_gguf_path  # noqa: E402
from ttsopt.search.registry import load_policy, load_prm  # noqa: E402
from ttsopt.search.run import run_search  # noqa: E402

PARAMS = 134_515_008


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/server_vs_local.json")
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threads = str(max(1, min(4, os.cpu_count() or 1)))
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(preset_gguf_path("smollm2-135m")),
                             "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                             "--n_threads", threads, "--verbose", "False"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(480):
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
        problems = load_problems("builtin:arith", limit=a.problems, seed=0)
        calc = load_prm("calc")
        engines = {"server": load_policy(f"openai:{url}#smollm2?num_parameters={PARAMS}&tokenizer=smollm2-135m"
                                         "&max_concurrency=1"),
                   "local": load_policy("llamacpp:smollm2-135m")}
        rows = []
        for strategy, prm in ((Strategy("cot"), None), (Strategy("majority", n=4), None),
                              (Strategy("best_of_n", n=4, agg="last", vote="prm_vote"), calc)):
            for name, policy in engines.items():
                t = time.perf_counter()
                res = run_search(problems, strategy, policy, prm, seed=0, temperature=0.7, max_tokens=160,
                                 problem_batch_size=len(problems))
                wall = time.perf_counter() - t
                acc = sum(bool(r.to_dict()["correct"]) for r in res) / len(res)
                rows.append({"strategy": strategy.key, "engine": name, "accuracy": acc, "wall_s": wall,
                             "generated_tokens": sum(r.to_dict()["compute"]["policy_generated_tokens"] for r in res)})
                print(json.dumps(rows[-1]), flush=True)
        out = {"cpu": cpu_model(), "loadavg": loadavg(), "problems": len(problems), "server_threads": threads,
               "rows": rows}
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    finally:
        proc.terminate()
        proc.wait(15)


if __name__ == "__main__":
    main()
