"""The evaluation report (``eval.json``'s dict) as markdown tables."""

from __future__ import annotations

from typing import Any

from ..fit.pairs import BUDGETS


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def deployed_table(report: dict[str, Any]) -> list[str]:
    """The deployed default per pair and N (the mode ``ttsopt train`` writes, chosen by nested cross-fitting),
    its held-out accuracy and CI against the best fixed strategy: the row a user gets, so it leads."""
    rows = [(name, n, b) for name, pair in report.get("pairs", {}).items()
            for n, b in (pair.get("deployed") or {}).items()]
    if not rows:
        return []
    lines = ["Deployed default (what `route`/`solve`/`serve` run unless told otherwise; the mode chosen per fold on its "
             "training problems' inner folds, scored on the held-out fold; CI = paired bootstrap 95% of deployed − best fixed)",
             "", "| pair | N | deployed mode | accuracy | 95% CI vs best fixed | best fixed (train folds) | GFLOPs/problem "
             "| modes chosen per fold |", "|---|---|---|---|---|---|---|---|"]
    for name, n, b in rows:
        chosen = ", ".join(sorted(set(b["fold_choices"]), key=b["fold_choices"].index))
        lines.append(f"| {name} | {n} | {b['mode']} | {b['accuracy']:.3f} | [{b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}] | "
                     f"{b['best_fixed_accuracy']:.3f} | {b['flops'] / 1e9:.0f} | {chosen} |")
    return lines + [""]


def deployed_compute_table(report: dict[str, Any]) -> list[str]:
    """The deployed default at compute budgets (tokens, FLOPs per problem), and its summary on the FLOPs axis."""
    rows = [(name, kind, b, r) for name, pair in report.get("pairs", {}).items()
            for kind, by in (pair.get("deployed_compute") or {}).items() for b, r in by.items()]
    if not rows:
        return []
    lines = ["Deployed default at compute budgets per problem (nested choice among router, best fixed and per-level "
             "rule; the cascades are fitted per N; CI vs the best fixed strategy that fits)", "",
             "| pair | budget | mode | accuracy | 95% CI vs best fixed | best fixed | tokens | GFLOPs |", "|---|---|---|---|---|---|---|---|"]
    for name, kind, b, r in rows:
        unit = f"{float(b):.0f} tokens" if kind == "tokens" else f"{float(b) / 1e9:.0f} GFLOPs"
        lines.append(f"| {name} | {unit} | {r['mode']} | {r['accuracy']:.3f} | [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] | "
                     f"{r['best_fixed_accuracy']:.3f} | {r['tokens']:.0f} | {r['flops'] / 1e9:.0f} |")
    summ = [(n, p["deployed_compute_summary"]) for n, p in report.get("pairs", {}).items() if p.get("deployed_compute_summary")]
    if summ:
        lines += ["", "| pair | AIQ, deployed (FLOPs budgets) | AIQ, per-level rule (same range) | × less compute at the "
                  "accuracy of the dearest best fixed |", "|---|---|---|---|"]
        for n, sm in summ:
            mult = sm.get("compute_multiplier_at_best_fixed_accuracy")
            lines.append(f"| {n} | {_fmt(sm.get('aiq'), '.3f')} | {_fmt(sm.get('per_level_rule_aiq'), '.3f')} | "
                         f"{'not reached' if mult is None else f'{mult:.2f}×'} |")
    return lines + [""]


def learning_table(curve: dict[str, Any]) -> str:
    """The learning curve (train/evaluation/learning.py) as one table per pair."""
    lines = [f"Deployed default against training problems per outer fold ({curve.get('repeats')} draws per size, "
             f"{curve.get('folds')} folds; mean over N; ± the SD across draws)", "",
             "| pair | training problems / fold (drawn) | the pair's own | draws | accuracy | gain over best fixed | AIQ |",
             "|---|---|---|---|---|---|---|"]
    for name, c in curve.get("pairs", {}).items():
        for p in c["points"]:
            sd = "" if p.get("diff_sd") is None else f" ± {p['diff_sd']:.3f}"
            asd = "" if p.get("accuracy_sd") is None else f" ± {p['accuracy_sd']:.3f}"
            size = f"{p['train_problems']} (all)" if p["all"] else str(p["train_problems"])
            own = p.get("pair_train_problems")
            lines.append(f"| {name} | {size} | {'' if own is None else f'{own:.0f}'} | {p['draws']} | {p['accuracy']:.3f}{asd} | {p['diff_vs_best_fixed']:+.3f}{sd} "
                         f"| {_fmt(p.get('aiq'), '.3f')} |")
    rec = curve.get("recommended")
    if rec:
        lines += ["", "Smallest size from which the gain stays within 0.01 of the gain with every problem: "
                  + ", ".join(f"{k}: {v}" for k, v in rec.items())]
    return "\n".join(lines)


def _markdown_core(report: dict[str, Any]) -> str:
    """The evaluation as markdown tables: one row per pair × budget, then the compute curves' summary."""
    lines = deployed_table(report) + [
             f"Evaluation ({report['mode']}, {report['folds']} folds by question key, {report['rows']} rows): "
             f"gap recovered {_fmt(report['gap_recovered'], '.3f')} (mean over pairs and budgets), "
             f"Brier {report['brier']:.4f}",
             "", "| pair | N | router [95% CI of diff] | best fixed (train) | best fixed (test) | per-bin (oracle bins) "
             "| paper rule | random | oracle | gap recovered |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, pair in report["pairs"].items():
        for n, b in pair["budgets"].items():
            r = b["router"]
            rule = b.get("paper_rule", {}).get("accuracy")
            test_best = b.get("best_fixed_test", {}).get("accuracy", float("nan"))
            per_bin = b.get("per_bin_oracle_bins", {}).get("accuracy", float("nan"))
            lines.append(f"| {name} | {n} | {r['accuracy']:.3f} [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] | "
                         f"{b['best_fixed']['accuracy']:.3f} | {test_best:.3f} | "
                         f"{per_bin:.3f} | {'' if rule is None else f'{rule:.3f}'} | "
                         f"{b['random']['accuracy']:.3f} | {b['oracle']['accuracy']:.3f} | {b['gap_recovered']:.2f} |")
    lines += ["", "| pair | AIQ router | AIQ per-level rule | AIQ fixed | AIQ oracle | compute × at best-fixed accuracy |",
              "|---|---|---|---|---|---|"]
    for name, pair in report["pairs"].items():
        if "curve" not in pair:
            continue
        c = pair["curve"]
        m = c["compute_multiplier_at_best_fixed_accuracy"]
        lines.append(f"| {name} | {c['aiq']['router']:.3f} | {c['aiq']['per_level_rule']:.3f} | {c['aiq']['fixed']:.3f} | "
                     f"{c['aiq']['oracle']:.3f} | {'not reached' if m is None else f'{m:.2f}'} |")
    return "\n".join(lines) + "\n"



_RULE_LABELS = {"router": "router", "router_shrunk": "shrunk", "router_margin": "margin", "router_topk": "top-K",
                "level_rule_oracle": "level rule (oracle level)", "level_rule_predicted": "level rule (predicted level)",
                "level_blend": "level blend", "per_bin_predicted_text": "per-bin (text-predicted bins)",
                "difficulty_curve": "difficulty curve (d̂ from text)",
                "difficulty_curve_blend": "difficulty curve + LightGBM blend"}


def _label(name: str) -> str:
    if name.startswith("router_probe"):
        return f"router + probe k={name[len('router_probe'):]}"
    if name.startswith("per_bin_predicted_probe"):
        return f"per-bin (probe k={name[len('per_bin_predicted_probe'):]} bins)"
    return _RULE_LABELS.get(name, name)


def _cell(rec: dict[str, Any] | None, gap: float | None = None) -> str:
    if rec is None:
        return ""
    gap = rec.get("gap_recovered") if gap is None else gap
    lo, hi = rec["ci95"]
    mark = "↓" if hi < 0 else ("↑" if lo > 0 else "")
    return f"{rec['accuracy']:.3f}{mark} ({'' if gap != gap else f'{gap:+.2f}'})"


def _tau(tau: float | None) -> str:
    return "no CoT" if tau is None else f"{tau:g}"


_CASCADE_VARIANTS = {"plain": "cascade (τ, escalation per fold)", "router": "cascade + router escalation",
                     "binned": "cascade per bin of predicted CoT accuracy",
                     "level": "cascade per level predicted from the text"}


def _where(pick: dict[str, Any]) -> str:
    """"bin 2: " / "level 3: " / "" before a cascade choice."""
    for k in ("bin", "level"):
        if k in pick:
            return f"{k} {pick[k]}: "
    return ""


def _aiq_ci(curve: dict[str, Any], other: str) -> str:
    d = curve.get("aiq_minus", {}).get(other)
    return "" if d is None else f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def _cascade_markdown(report: dict[str, Any]) -> list[str]:
    """The verify-first cascade (train/fit/cascade.py) per pair: at each N, then on the compute axis."""
    as_is = [(name, n, b) for name, p in report["pairs"].items() for n, b in p["budgets"].items()
             if any(k.startswith("cascade_") for k in b)]
    if as_is:  # a saved router's fitted cascade on data it never saw
        lines = ["", "### The router's fitted cascade, as it is (verify first, escalate on doubt)", "",
                 "| pair | N | best fixed | mode | accuracy [95% CI of diff] | oracle | gap recovered | escalated | "
                 "GFLOPs/problem |", "|---|---|---|---|---|---|---|---|---|"]
        for name, n, b in as_is:
            for mode in ("level", "binned", "fitted", "router"):
                c = b.get(f"cascade_{mode}")
                if c is not None:
                    lines.append(f"| {name} | {n} | {b['best_fixed']['accuracy']:.3f} | {mode} | {c['accuracy']:.3f} "
                                 f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] | {b['oracle']['accuracy']:.3f} | "
                                 f"{c['gap_recovered']:+.2f} | {c['escalated']:.0%} | {c['flops'] / 1e9:.0f} |")
        return lines
    pairs = {n: p["cascade"] for n, p in report["pairs"].items() if "cascade" in p}
    if not pairs:
        return []
    lines = ["", "### Verify first, escalate on doubt (greedy CoT checked by the pair's PRM; τ and the escalation "
             "chosen on the training folds, or the escalation per problem by the router's held-out predictions)", "",
             "| pair | N | best fixed | variant | accuracy [95% CI of diff] | oracle | gap recovered | escalated | "
             "GFLOPs/problem: best fixed → variant | choices per fold (τ → escalation) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in pairs.items():
        base = report["pairs"][name]["budgets"]
        for n in base:
            for v, label in _CASCADE_VARIANTS.items():
                b = c.get(v, {}).get("budgets", {}).get(n)
                if b is None:
                    continue
                picks = sorted({_where(q) + f"{_tau(q['tau'])} → {q['escalate']}" for q in b["choices"]})
                if len(picks) > 4:
                    picks = picks[:4] + [f"… {len(picks)} distinct over folds and bins"]
                lines.append(f"| {name} | {n} | {base[n]['best_fixed']['accuracy']:.3f} | {label} | {b['accuracy']:.3f} "
                             f"[{b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}] | {base[n]['oracle']['accuracy']:.3f} | "
                             f"{b['gap_recovered']:+.2f} | {b['escalated']:.0%} | "
                             f"{base[n]['best_fixed']['flops'] / 1e9:.0f} → {b['flops'] / 1e9:.0f} | {'; '.join(picks)} |")
    with_rest = [f"{name} N = {n}: {b['best_fixed_with_rest']:.3f}" for name, c in pairs.items()
                 for n, b in c["plain"]["budgets"].items() if "best_fixed_with_rest" in b]
    if with_rest:
        lines += ["", "The escalation may use pooled strategies at n = N - 1 (train/fit/rest.py); the best fixed strategy "
                  "chosen on the training folds with those added to the catalogue: " + "; ".join(with_rest)]
    lines += ["", "| pair | variant | mean gap recovered (N = 1–16) | never significantly below best fixed | issue target | "
              "AIQ | AIQ − per-level rule [95% CI] | AIQ − fixed [95% CI] | compute × at best-fixed accuracy | "
              "(AIQ: router, per-level rule, fixed, oracle) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in pairs.items():
        base = report["pairs"][name]["curve"]["aiq"]
        for v, label in _CASCADE_VARIANTS.items():
            if v not in c:
                continue
            cur, sm = c[v]["curve"], c[v]["summary"]
            m = cur["compute_multiplier_at_best_fixed_accuracy"]
            lines.append(f"| {name} | {label} | {sm['gap_recovered_mean']:+.2f} | "
                         f"{'yes' if sm['never_significantly_below_best_fixed'] else 'no'} | "
                         f"{'yes' if sm['meets_issue_target'] else 'no'} | {cur['aiq']:.3f} | "
                         f"{_aiq_ci(cur, 'per_level_rule')} | {_aiq_ci(cur, 'fixed')} | "
                         f"{'not reached' if m is None else f'{m:.2f}'} | {base['router']:.3f}, "
                         f"{base['per_level_rule']:.3f}, {base['fixed']:.3f}, {base['oracle']:.3f} |")
    lines += ["", "CoT accuracy by the PRM's lowest step score on it (problems): " + "; ".join(
        f"{name}: " + ", ".join(f"{v} → {q['cot_accuracy']:.2f} ({q['problems']})" for v, q in c["gate"]["by_score"].items())
        for name, c in pairs.items())]
    held = [f"{name} {c['levels']['held_out_accuracy']:.2f}" for name, c in pairs.items() if "levels" in c]
    if held:
        lines += ["", "The level cascade's level model (selector/levels.py), fitted on the training folds: accuracy of "
                  "its predicted level on the held-out problems: " + "; ".join(held)]
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The evaluation as markdown tables: the original two, then every rule, allocation, target mode and LOPO."""
    lines = [_markdown_core(report).rstrip("\n")]
    pairs = {n: p for n, p in report["pairs"].items() if "summary" in p}
    if report.get("skipped_pairs"):
        lines += ["", f"Not evaluated (fewer than {report.get('min_problems')} complete problems; still in training): "
                  + ", ".join(report["skipped_pairs"])]
    lines += _cascade_markdown(report)
    if any(p.get("deployed_compute") for p in report.get("pairs", {}).values()):
        lines += [""] + deployed_compute_table(report)
    if report.get("learning_curve"):
        lines += ["", "### How many sweep problems a pair needs", "", learning_table(report["learning_curve"])]
    for name, pair in pairs.items():
        rules = list(pair["summary"])
        lines += ["", f"### {name}: every rule at each budget N (accuracy, gap recovered; ↓/↑ = 95% CI of the "
                  "difference with the best fixed strategy entirely below/above 0)", "",
                  "| N | best fixed | oracle | " + " | ".join(_label(r) for r in rules) + " |",
                  "|---|---|---|" + "---|" * len(rules)]
        for n, b in pair["budgets"].items():
            cells = [_cell(b.get(r), b["gap_recovered"] if r == "router" else None) for r in rules]
            lines.append(f"| {n} | {b['best_fixed']['accuracy']:.3f} | {b['oracle']['accuracy']:.3f} | "
                         + " | ".join(cells) + " |")
        c = pair["curve"]
        lines += ["", "| rule | mean gap recovered (N = 1–16) | never significantly below best fixed | issue target "
                  "(≥ 0.30 and never below) | AIQ | compute × at best-fixed accuracy | knob per fold |",
                  "|---|---|---|---|---|---|---|"]
        for r in rules:
            sm = pair["summary"][r]
            cur = {"aiq": c["aiq"]["router"], "compute_multiplier_at_best_fixed_accuracy":
                   c["compute_multiplier_at_best_fixed_accuracy"]} if r == "router" else c["rules"].get(r, {})
            m = cur.get("compute_multiplier_at_best_fixed_accuracy")
            knob = next((b[r].get("params") for b in pair["budgets"].values() if r in b and "params" in b[r]), None)
            g = sm["gap_recovered_mean"]
            lines.append(f"| {_label(r)} | {'' if g is None else f'{g:+.2f}'} | "
                         f"{'yes' if sm['never_significantly_below_best_fixed'] else 'no'} | "
                         f"{'yes' if sm['meets_issue_target'] else 'no'} | "
                         f"{cur.get('aiq', float('nan')):.3f} | {'not reached' if m is None else f'{m:.2f}'} | "
                         f"{'' if knob is None or len(set(knob)) == 1 and knob[0] == 0.0 else knob} |")
        lines.append(f"| (AIQ: fixed {c['aiq']['fixed']:.3f}, per-level rule {c['aiq']['per_level_rule']:.3f}, "
                     f"oracle {c['aiq']['oracle']:.3f}) | | | | | | |")
        if pair.get("classifiers"):
            lines += ["", "Online classifiers (cross-fitted accuracy): " + ", ".join(
                f"{k.replace('_', ' ')} {v:.2f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                for k, v in pair["classifiers"].items())]
        alloc = pair.get("allocation", {})
        if alloc:
            names = list(alloc)
            lines += ["", f"Batch allocation ({name}): one token budget B per problem × the held-out problems of a fold, "
                      "split greedily on predicted accuracies, vs the best fixed strategy (training folds) that fits B "
                      "(accuracy, realized tokens/problem; Δ vs uniform [95% CI])", "",
                      "| B tokens/problem | uniform | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
            for i, row in enumerate(alloc[names[0]]):
                cells = []
                for nm in names:
                    a = alloc[nm][i]
                    cells.append(f"{a['allocated']['accuracy']:.3f} ({a['allocated']['tokens']:.0f}) "
                                 f"Δ {a['diff']:+.3f} [{a['ci95'][0]:+.3f}, {a['ci95'][1]:+.3f}]")
                lines.append(f"| {row['tokens_per_problem']:.0f} | {row['uniform']['accuracy']:.3f} "
                             f"({row['uniform']['tokens']:.0f}) | " + " | ".join(cells) + " |")
        tm = pair.get("target_mode", {})
        if tm:
            names = list(tm)
            lines += ["", f"Target-accuracy mode ({name}): achieved accuracy, tokens/problem, share flagged unreachable",
                      "", "| target | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for i, row in enumerate(tm[names[0]]):
                lines.append(f"| {row['target']:.1f} | " + " | ".join(
                    f"{tm[nm][i]['accuracy']:.3f}, {tm[nm][i]['tokens']:.0f} tok, {tm[nm][i]['unreachable']:.0%} unreachable"
                    for nm in names) + " |")
    lopo = report.get("lopo")
    if lopo and lopo.get("pairs"):
        lines += ["", f"### Leave one pair out (train on the other pairs minus the held-out pair's evaluation questions, "
                  f"plus {lopo['calibration_problems']} calibration problems of the held-out pair; best fixed chosen on "
                  "those; accuracy router / best fixed / oracle, gap)", "",
                  "| held-out pair | test problems | " + " | ".join(f"N={n}" for n in BUDGETS) + " | mean gap |",
                  "|---|---|" + "---|" * (len(BUDGETS) + 1)]
        for name, lp in lopo["pairs"].items():
            cells = []
            for n in BUDGETS:
                b = lp["budgets"].get(str(n))
                cells.append("" if b is None else f"{b['router']['accuracy']:.3f} / {b['best_fixed']['accuracy']:.3f} / "
                             f"{b['oracle']['accuracy']:.3f} ({b['gap_recovered']:+.2f})")
            g = lp["gap_recovered_mean"]
            lines.append(f"| {name} | {lp['test_problems']} | " + " | ".join(cells) + f" | {'' if g is None else f'{g:+.2f}'} |")
    return "\n".join(lines) + "\n"


__all__ = ["deployed_compute_table", "deployed_table", "learning_table", "markdown"]
