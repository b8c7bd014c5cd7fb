"""Pass@1, majority@N and any@N per level, from a `ttsopt run --strategy majority` results file.

    ttsopt run --strategy majority --n 8 --per-level 20 --out runs/maj8.jsonl
    python benchmarks/accuracy_by_level.py runs/maj8.jsonl

Pass@1 is the mean correctness of all N samples (each sample graded against the gold
answer with ttsopt's grader); majority@N is the run's own answer; any@N is whether
any sample was right (the ceiling for a perfect verifier).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="JSONL written by `ttsopt run`")
    ap.add_argument("--json", help="also write the table as JSON here")
    args = ap.parse_args()
    from ttsopt.data import is_equivalent

    by_level: dict = defaultdict(lambda: {"n": 0, "pass1": 0.0, "maj": 0, "any": 0})
    for line in open(args.results):
        r = json.loads(line)
        flags = [c["answer"] is not None and is_equivalent(c["answer"], r["gold"]) for c in r["candidates"]]
        for key in (r.get("level"), "all"):
            s = by_level[key]
            s["n"] += 1
            s["pass1"] += sum(flags) / len(flags)
            s["maj"] += bool(r["correct"])
            s["any"] += any(flags)
    print(f"{'level':>6} {'problems':>8} {'pass@1':>7} {'maj@N':>6} {'any@N':>6}")
    table = {}
    for key in sorted(by_level, key=lambda k: (k == "all", str(k))):
        s = by_level[key]
        row = {"problems": s["n"], "pass@1": s["pass1"] / s["n"], "maj@N": s["maj"] / s["n"], "any@N": s["any"] / s["n"]}
        table[str(key)] = row
        print(f"{key!s:>6} {s['n']:>8} {row['pass@1']:>7.3f} {row['maj@N']:>6.3f} {row['any@N']:>6.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(table, fh, indent=1)


if __name__ == "__main__":
    main()
