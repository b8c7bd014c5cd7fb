"""ProcessBench F1 of the calculator PRM, and where its blind spots are.

    python benchmarks/calc_blind_spots.py --data PATH/TO/processbench_gsm8k.json

The calculator only sees arithmetic that a step states. For every erroneous solution it
sorts the first wrong step (ProcessBench's ``label``) into: *caught* (a stated equation
there is wrong), *missed, right arithmetic* (every checkable equation is right: the error
is in the setup or the reasoning, the calculator's known blind spot) and *missed, nothing
checkable*. It also counts false alarms: correct solutions with a flagged step, erroneous
ones flagged before their first wrong step, and the share of right steps flagged. All rows
are used unless ``--limit`` asks for a class-balanced sample. Prints a table, or JSON with
``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path



def analyse(examples, prm, threshold: float = 0.5, n_examples: int = 0) -> dict:
    """Metrics from ``evaluate_prm`` plus the blind-spot breakdown (counts and fractions)."""
    from ttsopt.search.prm.calc import CalculatorPRM
    from ttsopt.search.prm.processbench import evaluate_prm

    # time the scoring alone, with a fresh PRM (no cached steps); evaluate_prm's own wall
    # time also covers computing the AUC (and importing scikit-learn for it)
    fresh = CalculatorPRM(wrong_score=prm.wrong_score, right_score=prm.right_score,
                          neutral_score=prm.neutral_score, max_digits=prm.max_digits,
                          max_ops=prm.max_ops, max_chars=prm.max_chars)
    start = time.perf_counter()
    fresh.score([(ex.problem, list(ex.steps)) for ex in examples])
    score_s = time.perf_counter() - start
    result = evaluate_prm(prm, examples, threshold=threshold)
    first_wrong: Counter[str] = Counter()
    position: Counter[str] = Counter()
    samples: dict[str, list[dict]] = {}
    right_steps = flagged_right_steps = checkable_steps = all_steps = 0
    correct_flagged = 0
    for ex, pred in zip(examples, result.predictions):
        checks = [prm.check(s) for s in ex.steps]
        all_steps += len(checks)
        checkable_steps += sum(c.verdict != "neutral" for c in checks)
        good = checks if ex.label < 0 else checks[:ex.label]
        right_steps += len(good)
        flagged_right_steps += sum(c.verdict == "wrong" for c in good)
        if ex.label < 0:
            correct_flagged += pred.predicted >= 0
            if pred.predicted >= 0:
                _keep(samples, "false_alarm_on_correct", ex, checks[pred.predicted], n_examples)
            continue
        check = checks[ex.label]
        kind = {"wrong": "caught", "right": "missed_right_arithmetic", "neutral": "missed_nothing_checkable"}[
            check.verdict
        ]
        first_wrong[kind] += 1
        _keep(samples, kind, ex, check, n_examples)
        if pred.predicted == ex.label:
            position["exact"] += 1
        elif pred.predicted < 0:
            position["none"] += 1
        elif pred.predicted < ex.label:
            position["early"] += 1
            _keep(samples, "false_alarm_before_error", ex, checks[pred.predicted], n_examples)
        else:
            position["late"] += 1
    n_err, n_cor = result.n_erroneous, result.n_correct
    report = {
        "prm": prm.name,
        "threshold": threshold,
        "n_erroneous": n_err,
        "n_correct": n_cor,
        "f1": result.f1,
        "accuracy_erroneous": result.accuracy_erroneous,
        "accuracy_correct": result.accuracy_correct,
        "auc": result.auc,
        "score_s": round(score_s, 3),
        "steps": all_steps,
        "prm_tokens": result.prm_tokens,
        "first_wrong_step": {k: _count(first_wrong[k], n_err) for k in
                             ("caught", "missed_right_arithmetic", "missed_nothing_checkable")},
        "predicted_first_error": {k: _count(position[k], n_err) for k in ("exact", "early", "late", "none")},
        "correct_solutions_flagged": _count(correct_flagged, n_cor),
        "right_steps_flagged": _count(flagged_right_steps, right_steps),
        "steps_with_checkable_arithmetic": _count(checkable_steps, all_steps),
    }
    if n_examples:
        report["examples"] = samples
    return report


def _count(k: int, n: int) -> dict:
    return {"count": k, "of": n, "fraction": round(k / n, 4) if n else None}


def _keep(samples: dict, kind: str, ex, check, limit: int) -> None:
    bucket = samples.setdefault(kind, [])
    if len(bucket) < limit:
        bucket.append({
            "id": ex.id,
            "label": ex.label,
            "equations": [f"{e.left} = {e.right} ({'right' if e.correct else 'WRONG'})" for e in check.equations],
        })


def _print_table(r: dict, out) -> None:
    def line(name: str, c: dict) -> None:
        frac = "-" if c["fraction"] is None else f"{c['fraction']:.1%}"
        print(f"  {name:<44} {c['count']:>5} / {c['of']:<5} {frac:>7}", file=out)

    print(f"{r['prm']} on {r['n_erroneous']} erroneous + {r['n_correct']} correct solutions "
          f"(threshold {r['threshold']}; {r['steps']} steps scored in {r['score_s']} s)", file=out)
    auc = "n/a" if r["auc"] is None else f"{r['auc']:.3f}"
    print(f"  F1 {r['f1']:.3f}   accuracy erroneous {r['accuracy_erroneous']:.3f}   "
          f"accuracy correct {r['accuracy_correct']:.3f}   step AUC {auc}", file=out)
    print("first wrong step of erroneous solutions:", file=out)
    line("caught (a stated equation is wrong)", r["first_wrong_step"]["caught"])
    line("missed: its arithmetic is right (blind spot)", r["first_wrong_step"]["missed_right_arithmetic"])
    line("missed: nothing checkable", r["first_wrong_step"]["missed_nothing_checkable"])
    print("predicted first error on erroneous solutions:", file=out)
    for k in ("exact", "early", "late", "none"):
        line(k, r["predicted_first_error"][k])
    print("false alarms:", file=out)
    line("correct solutions with a flagged step", r["correct_solutions_flagged"])
    line("right steps flagged (before any error)", r["right_steps_flagged"])
    line("steps with checkable arithmetic", r["steps_with_checkable_arithmetic"])
    for kind, rows in r.get("examples", {}).items():
        print(f"examples, {kind}:", file=out)
        for row in rows:
            print(f"  {row['id']} (label {row['label']}): {'; '.join(row['equations']) or '-'}", file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a ProcessBench file (processbench_gsm8k.json)")
    ap.add_argument("--limit", type=int, default=None, help="a class-balanced sample of this many (default: all)")
    ap.add_argument("--threshold", type=float, default=0.5, help="a step scored below this is flagged")
    ap.add_argument("--examples", type=int, default=0, metavar="K", help="also list K example ids per category")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args(argv)
    if not args.data.exists():
        ap.error(f"ProcessBench file not found: {args.data}")

    from ttsopt.search.prm.calc import CalculatorPRM
    from ttsopt.search.prm.processbench import load_processbench

    examples = load_processbench(args.data, args.limit)
    report = analyse(examples, CalculatorPRM(), threshold=args.threshold, n_examples=args.examples)
    report["data"] = args.data.name
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        _print_table(report, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
