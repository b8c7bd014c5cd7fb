"""What pooled budgets save: majority at N = 1, 2, 4, 8, 16 run one by one vs the one 16-sample pool.

    python benchmarks/pooled_vs_separate.py [POLICY_SPEC]     # default llamacpp:smollm2-135m

The sweep samples one pool of N_max candidates per problem and estimates every smaller budget
on subsets of it; without pooling each budget would be its own run. Both are run here on the
first 10 problems of arith-embedded (2 per level) and their generated tokens and wall times
printed, with the ratio. Wall times move with machine load: run it on a quiet machine.
"""
import json
import sys
import time

from ttsopt.data import load_problems
from ttsopt.train.sweep.units import order_problems
from ttsopt.search.registry import load_policy
from ttsopt.search.run import run_search
from ttsopt.search.strategy import Strategy
from ttsopt.search.types import SamplingParams

problems = order_problems(load_problems("builtin:arith", per_level=2, seed=0), "interleave_levels")
policy = load_policy(sys.argv[1] if len(sys.argv) > 1 else "llamacpp:smollm2-135m")
policy.generate([policy.format_prompt("What is 1 + 1?")], SamplingParams(n=2, max_tokens=8))  # warm-up
rows = []
for n in (1, 2, 4, 8, 16):
    if hasattr(policy, "reset_cache"):
        policy.reset_cache()
    t = time.perf_counter()
    res = run_search(problems, Strategy("majority", n=n), policy, seed=0, temperature=0.7, max_tokens=160)
    wall = time.perf_counter() - t
    gen = sum(r.compute.policy_generated_tokens for r in res)
    rows.append({"n": n, "wall_s": round(wall, 2), "generated_tokens": gen, "accuracy": sum(r.correct for r in res) / len(res)})
    print(rows[-1], flush=True)
sep = {k: sum(r[k] for r in rows) for k in ("wall_s", "generated_tokens")}
pool = rows[-1]
print(json.dumps({"separate_1_to_16": sep, "pool_16": pool, "ratio_tokens": sep["generated_tokens"] / pool["generated_tokens"],
                  "ratio_wall": sep["wall_s"] / pool["wall_s"], "problems": len(problems)}))
