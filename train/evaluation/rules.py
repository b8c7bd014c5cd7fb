"""Decision rules beyond the plain argmax: shrinkage, margin, top-K, per-bin rules, blends, probes.

Every rule below turns what is known before routing (the training folds' labels and tokens,
the model's held-out predictions, bins predicted from online features) into a score per
(problem, strategy); a budget N keeps the strategies with n + k <= N (k = the probe's samples,
0 without a probe), a compute price λ subtracts λ·(expected tokens + probe tokens). A knob a
rule has (shrinkage α, margin δ) is chosen per outer fold on the inner out-of-fold predictions
of that fold's training problems (mean accuracy over the budgets), never on its test problems.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..fit.folds import outer_folds
from ..fit.pairs import BUDGETS, _argmax_cheapest, _fixed_choice, _Pair
from .difficulty_rule import difficulty_rules
from .metrics import gap_recovered, paired_bootstrap
from .rule import _Rule

#: Shrinkage / blend weight on the model (0: the training mean, the best fixed strategy; 1: the model).
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: How many of the best strategies on the training folds (within the budget) the model may choose among.
TOPKS = (1, 2, 3, 5, 1000)
#: Margin by which another strategy's prediction must beat the best fixed one (1.01: never).
MARGINS = (1.01, 0.2, 0.1, 0.05, 0.02, 0.0)


def _train_means(p: _Pair, tr: np.ndarray) -> np.ndarray:
    return p.label[tr].mean(axis=0)


def _bin_means(p: _Pair, tr: np.ndarray, bins_tr: np.ndarray, bins_rows: np.ndarray,
               values: np.ndarray | None = None) -> np.ndarray:
    """Per row, the training problems' mean label (or ``values``: tokens) per strategy in the row's bin
    (over all training problems if the bin is empty)."""
    values = p.label if values is None else values
    overall = values[tr].mean(axis=0)
    out = np.empty((len(bins_rows), values.shape[1]))
    for b in np.unique(bins_rows):
        sel = tr[bins_tr == b]
        out[bins_rows == b] = values[sel].mean(axis=0) if len(sel) else overall
    return out


def _s_star(p: _Pair, tr: np.ndarray, allowed: np.ndarray | None, lam: float | None) -> int:
    """The best fixed strategy on ``tr``: within the budget, or under the price λ."""
    if allowed is not None:
        return _fixed_choice(p.label, p.tokens, tr, allowed)
    score = _train_means(p, tr) - lam * p.tokens[tr].mean(axis=0)
    return int(_argmax_cheapest(score[None, :], p.tokens[tr].mean(axis=0)[None, :])[0])


def _rule_scores(rule: _Rule, p: _Pair, preds: np.ndarray | None, tr: np.ndarray, rows: np.ndarray,
                 bins_rows: np.ndarray | None, param: float, allowed: np.ndarray | None,
                 lam: float | None) -> np.ndarray:
    """Scores of ``rows`` from what ``tr`` (the training problems) and ``preds`` (the rows' predictions) give.

    - ``pred``: the model's predictions as they are (argmax: the plain router);
    - ``shrink``: ``(1 − α)·training mean + α·prediction``, against the winner's curse of an
      argmax over noisy per-strategy predictions (α = 0 is the best fixed strategy);
    - ``margin``: the best fixed strategy unless the model predicts another better by more than δ;
    - ``topk``: the model chooses only among the K best strategies on the training folds;
    - ``bin``: per bin (level, difficulty), the training problems' mean label per strategy (the
      per-bin rule; the row's bin is an oracle or predicted from online features);
    - ``blend``: ``(1 − α)·bin mean + α·prediction``.
    """
    if rule.kind == "pred":
        return preds
    if rule.kind == "shrink":
        return (1 - param) * _train_means(p, tr)[None, :] + param * preds
    if rule.kind == "topk":
        rank = _train_means(p, tr)
        if allowed is not None:
            rank = np.where(allowed, rank, -np.inf)
        else:
            rank = rank - lam * p.tokens[tr].mean(axis=0)
        keep = np.zeros(p.label.shape[1], dtype=bool)
        keep[np.argsort(-rank, kind="stable")[:int(param)]] = True
        return np.where(keep[None, :], preds, -np.inf)
    if rule.kind == "margin":
        bonus = np.zeros(p.label.shape[1])
        bonus[_s_star(p, tr, allowed, lam)] = param
        return preds + bonus[None, :]
    means = _bin_means(p, tr, rule.bins_true[tr], bins_rows)
    if rule.kind == "bin":
        return means
    if rule.kind == "blend":
        return (1 - param) * means + param * preds
    raise ValueError(f"unknown rule kind {rule.kind!r}")


def _pick(score: np.ndarray, cost: np.ndarray, allowed: np.ndarray | None, lam: float | None) -> np.ndarray:
    """Argmax within the budget (``allowed``), or of score − λ·cost; ties to the cheaper."""
    if allowed is not None:
        return _argmax_cheapest(np.where(allowed, score, -np.inf), np.where(allowed, cost, np.inf))
    return _argmax_cheapest(score - lam * cost, cost)


def _allowed(p: _Pair, budget: int, k: int) -> np.ndarray:
    return p.n + k <= budget


def _choose_param(rule: _Rule, p: _Pair, f: int, tr: np.ndarray) -> float:
    """The rule's knob for outer fold ``f``: best mean accuracy over the budgets on the inner folds."""
    if len(rule.grid) == 1 or rule.inner is None:
        return rule.grid[0]
    inner_pred, inner_fold = rule.inner[0][f], rule.inner[1][f]
    groups = inner_fold[tr]
    best, best_val = rule.grid[0], -np.inf
    budgets = [b for b in BUDGETS if _allowed(p, b, rule.probe_k).any()]
    for param in rule.grid:
        total = 0.0
        for g in np.unique(groups[groups >= 0]):
            itr, iva = tr[groups != g], tr[groups == g]
            cost = p.tokens[itr].mean(axis=0)[None, :].repeat(len(iva), axis=0)
            for budget in budgets:
                allowed = _allowed(p, budget, rule.probe_k)
                score = _rule_scores(rule, p, inner_pred[iva], itr, iva,
                                     None if rule.bins_true is None else rule.bins_true[iva], param, allowed, None)
                total += p.label[iva, _pick(score, cost, allowed, None)].sum()
        if total > best_val + 1e-9:
            best, best_val = param, total
    return float(best)


def _apply_rule(rule: _Rule, p: _Pair, params: dict[int, float], *, budget: int | None = None,
                lam: float | None = None) -> np.ndarray | None:
    """Held-out picks of ``rule`` at a budget N or a price λ (None when nothing fits and there is no fallback)."""
    allowed = None if budget is None else _allowed(p, budget, rule.probe_k)
    if allowed is not None and not allowed.any():
        return None if rule.fallback is None else _apply_rule(rule.fallback, p, _fallback_params(p, rule.fallback),
                                                              budget=budget)
    idx = np.arange(len(p.fold))
    picks = np.zeros(len(idx), dtype=int)
    for f, tr, te in outer_folds(p.fold):
        if rule.cost is not None:
            cost = rule.cost[te]
        elif rule.kind in ("bin", "blend"):  # a bin's own expected tokens (word problems are longer)
            cost = _bin_means(p, tr, rule.bins_true[tr], rule.bins_pred[te], p.tokens)
        else:
            cost = p.tokens[tr].mean(axis=0)[None, :]
        cost = cost + (0.0 if rule.probe_tokens is None else rule.probe_tokens[te, None])
        score = _rule_scores(rule, p, None if rule.pred is None else rule.pred[te], tr, te,
                             None if rule.bins_pred is None else rule.bins_pred[te], params[int(f)], allowed, lam)
        picks[te] = _pick(score, np.broadcast_to(cost, score.shape), allowed, lam)
    return picks


def _fallback_params(p: _Pair, rule: _Rule) -> dict[int, float]:
    """The rule's knob per outer fold (chosen on inner folds; cached on the pair)."""
    cache = p.extra.setdefault("_params", {})
    if rule.name not in cache:
        cache[rule.name] = {f: _choose_param(rule, p, f, tr) for f, tr, _ in outer_folds(p.fold)}
    return cache[rule.name]


def _probe_charge(rule: _Rule, p: _Pair, picks_from_probe: bool) -> tuple[np.ndarray, np.ndarray]:
    if not picks_from_probe or rule.probe_tokens is None:
        z = np.zeros(len(p.fold))
        return z, z
    return rule.probe_tokens, rule.probe_flops


def _rule_record(rule: _Rule, p: _Pair, picks: np.ndarray, fixed: np.ndarray, oracle: float, probed: bool,
                 seed: int) -> dict[str, Any]:
    idx = np.arange(len(p.fold))
    acc = p.label[idx, picks]
    extra_t, extra_f = _probe_charge(rule, p, probed)
    ci = paired_bootstrap(acc, fixed, seed=seed)
    return {"accuracy": float(acc.mean()), "flops": float((p.flops[idx, picks] + extra_f).mean()),
            "tokens": float((p.tokens[idx, picks] + extra_t).mean()), "ci95": [ci["lo"], ci["hi"]],
            "diff_vs_best_fixed": ci["mean"], "gap_recovered": gap_recovered(float(acc.mean()), float(fixed.mean()),
                                                                             oracle),
            "probed": bool(probed and rule.probe_k > 0)}


def _best_fixed_vector(p: _Pair, allowed: np.ndarray) -> np.ndarray:
    idx = np.arange(len(p.fold))
    fixed = np.zeros(len(idx))
    for f, tr, te in outer_folds(p.fold):
        fixed[te] = p.label[te, _fixed_choice(p.label, p.tokens, tr, allowed)]
    return fixed


def _predict_bins(p: _Pair, features: list[np.ndarray], target: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """Bins of held-out problems predicted from online features by a classifier fitted on the training folds.

    A random forest (small data, mixed scales, no tuning needed); ``features[f]`` are the
    per-problem inputs computed with fold ``f``'s pipeline. Returns the predictions and their
    cross-fitted accuracy against ``target``.
    """
    from sklearn.ensemble import RandomForestClassifier

    idx = np.arange(len(p.fold))
    out = np.empty(len(idx), dtype=object)
    for f, tr, te in outer_folds(p.fold):
        x = np.nan_to_num(np.asarray(features[int(f)], dtype=float))
        if len(np.unique(target[tr])) == 1:
            out[te] = target[tr][0]
            continue
        clf = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1).fit(x[tr], target[tr])
        out[te] = clf.predict(x[te])
    out = out.astype(str)
    return out, float((out == target).mean())


def _rules(p: _Pair, seed: int) -> tuple[list[_Rule], dict[str, Any]]:
    """The rules this pair's data supports (probes, features and inner predictions where present)."""
    ex = p.extra
    folds = [f for f, _, _ in outer_folds(p.fold)]  # by number: a pair need not have a problem in every fold
    rules: list[_Rule] = []
    info: dict[str, Any] = {}
    inner = None
    if all(f"inner_pred_{f}" in ex for f in folds):
        inner = ({f: ex[f"inner_pred_{f}"] for f in folds}, {f: ex[f"inner_fold_{f}"] for f in folds})
    base = _Rule("router", "pred", pred=p.pred)
    if inner is not None:
        rules.append(_Rule("router_shrunk", "shrink", pred=p.pred, inner=inner, grid=ALPHAS))
        rules.append(_Rule("router_margin", "margin", pred=p.pred, inner=inner, grid=MARGINS))
        rules.append(_Rule("router_topk", "topk", pred=p.pred, inner=inner, grid=TOPKS))
    rules.append(_Rule("level_rule_oracle", "bin", bins_pred=p.levels, bins_true=p.levels))
    feats = ex.get("features")
    text_bins = None
    if feats is not None:
        level_pred, level_acc = _predict_bins(p, feats, p.levels, seed)
        diff_pred, diff_acc = _predict_bins(p, feats, p.bins, seed)
        info["level_from_text_accuracy"] = level_acc
        info["difficulty_from_text_accuracy"] = diff_acc
        rules.append(_Rule("level_rule_predicted", "bin", bins_pred=level_pred, bins_true=p.levels))
        if inner is not None:
            rules.append(_Rule("level_blend", "blend", pred=p.pred, inner=inner, bins_pred=level_pred,
                               bins_true=p.levels, grid=ALPHAS))
        text_bins = _Rule("per_bin_predicted_text", "bin", bins_pred=diff_pred, bins_true=p.bins)
        rules.append(text_bins)
    for k in sorted(int(c[len("pred_probe"):]) for c in ex if c.startswith("pred_probe")):
        pk = ex[f"pred_probe{k}"]
        tokens, flops = ex[f"probe_cost_k{k}_tokens"].astype(float), ex[f"probe_cost_k{k}_flops"].astype(float)
        missing = np.isnan(pk).any(axis=1) | np.isnan(tokens)
        pk = np.where(missing[:, None], p.pred, pk)
        tokens, flops = np.where(missing, 0.0, tokens), np.where(missing, 0.0, flops)
        info[f"probe{k}_missing_problems"] = int(missing.sum())
        rules.append(_Rule(f"router_probe{k}", "pred", pred=pk, probe_k=k, probe_tokens=tokens, probe_flops=flops,
                           fallback=base))
        if feats is not None and f"probe_features_k{k}" in ex:
            pf = ex[f"probe_features_k{k}"]
            both = [np.hstack([np.asarray(x, dtype=float), pf]) for x in feats]
            bins_k, acc_k = _predict_bins(p, both, p.bins, seed)
            info[f"difficulty_from_probe{k}_accuracy"] = acc_k
            rules.append(_Rule(f"per_bin_predicted_probe{k}", "bin", bins_pred=bins_k, bins_true=p.bins, probe_k=k,
                               probe_tokens=tokens, probe_flops=flops, fallback=text_bins))
    if feats is not None and "pass_at_1" in ex:
        extra_rules, extra_info = difficulty_rules(p, feats, seed)
        rules += extra_rules
        info.update(extra_info)
    return rules, info


__all__ = ["ALPHAS", "MARGINS", "TOPKS"]
