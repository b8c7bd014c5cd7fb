"""``ttsopt report``: one self-contained HTML page about a router, its evaluation and what drives it.

The page has no external reference (no script, stylesheet or image link): every figure is an
inline base64 PNG, so the file can be mailed, attached to an issue or opened offline. The same
PNGs are written next to it under ``figures/`` for READMEs and slides.

If no evaluation is given, the cross-fitted evaluation of ``train/evaluation/evaluate.py`` runs (with few
Optuna trials per fold, say ``trials``) and is saved as ``eval.json`` beside the page; data the
router never saw is evaluated as it is, as ``ttsopt evaluate`` does.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

PAGE = "index.html"


@dataclass
class Figure:
    """One rendered figure of the page."""

    name: str
    title: str
    caption: str
    png: bytes


def run_evaluation(artifact: Any, table: pd.DataFrame, *, trials: int = 2, folds: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The evaluation ``ttsopt evaluate`` would run: cross-fitted on the router's own training questions,
    as-is on questions it never saw; a mix of both is refused (it would be neither). A router that does
    not list its training questions is taken to be evaluated on its training data (cross-fitted)."""
    from ..evaluation.evaluate import evaluate, evaluate_as_is
    from ..evaluation.mode import CROSS_FITTED, evaluation_mode, router_settings

    settings = router_settings(artifact.manifest, trials=trials, folds=folds)
    mode = evaluation_mode(artifact.manifest, table["question_key"], unlisted=CROSS_FITTED,
                           hint="evaluate them separately (`ttsopt evaluate`) and pass --eval")
    if mode == CROSS_FITTED:
        # the leave-one-pair-out part refits per pair and the report draws none of it: left to `ttsopt evaluate`
        return evaluate(table, settings, progress=progress, lopo=False)
    return evaluate_as_is(artifact, table)


def _pair_problem_counts(table: pd.DataFrame) -> dict[str, int]:
    from ttsopt.search.pairs import Pair

    groups = table.groupby(["policy", "prm"], sort=False)
    return {Pair(a, b).name: int(g["problem_id"].nunique()) for (a, b), g in groups}


def _decision_rows(decisions: pd.DataFrame, probes: bool) -> tuple[pd.DataFrame, str, str]:
    """The decision map's row variable: probe agreement when the router sees it, else the oracle difficulty bin."""
    if probes and "probe_agreement" in decisions and decisions["probe_agreement"].notna().any():
        a = decisions["probe_agreement"].astype(float)
        if a.nunique() <= 6:
            rows = a.map(lambda v: f"{v:.2f}")
        else:
            rows = pd.qcut(a, 3, duplicates="drop").astype(str)
        return decisions.assign(row=rows), "row", "probe agreement (share of the modal answer)"
    return decisions.assign(row=decisions["difficulty"].astype(str)), "row", "difficulty bin (oracle Pass@1)"


def render_figures(artifact: Any, table: pd.DataFrame, evaluation: dict[str, Any],
                   importance: dict[str, Any], *, dpi: int = 110) -> list[Figure]:
    """Every figure of the page, rendered to PNG (captions say what to look for)."""
    from . import plots
    from .explain import router_decisions

    problems = _pair_problem_counts(table)
    out: list[Figure] = []

    def add(name: str, title: str, caption: str, make: Callable[[], Any]) -> None:
        out.append(Figure(name, title, caption, plots.to_png(make(), dpi=dpi)))

    add("accuracy_by_budget", "Accuracy against budget, per difficulty bin",
        "Where lines cross, the best method changes with difficulty and budget: the case for routing per problem. "
        "Bins are the sweep's own Pass@1 (descriptive, not a router input).",
        lambda: plots.accuracy_by_budget(table))
    pairs = evaluation.get("pairs", {})
    if any(p.get("curve") for p in pairs.values()):
        add("accuracy_vs_flops", "Accuracy against compute",
            "The router's curve should lie above the dotted hull of the fixed strategies; the gap to the oracle is "
            "what a better router could still win. The pink curve, where there is one, is the verify-first cascade "
            "as solve --cascade true runs it (one plan per level predicted from the text where every level has "
            "enough problems, else per bin of the router's predicted CoT accuracy): the greedy CoT, checked by the "
            "PRM, escalated where the check fails.",
            lambda: plots.accuracy_vs_flops(evaluation, problems=problems))
    decisions = router_decisions(artifact, table)
    if not decisions.empty:
        frame, row, label = _decision_rows(decisions, artifact.pipeline.probes)
        add("decision_map", "Decision map",
            "What the saved router picks, by difficulty and budget (predictions on these problems; in-sample when "
            "they are its training data): a change of colour down a column is a difficulty-dependent choice.",
            lambda: plots.decision_map(frame, row=row, row_label=label))
    if pairs:
        add("router_vs_baselines", "Router against best fixed and oracle",
            "The red band is the 95% interval of the router's gain over the best fixed strategy: above the blue "
            "line means a real gain at that budget. Pink diamonds: the verify-first cascade at the same N.",
            lambda: plots.router_vs_baselines(evaluation, problems=problems))
    if evaluation.get("calibration"):
        add("calibration", "Calibration",
            "Points on the diagonal mean the predicted accuracy can be read as a probability; the numbers are rows "
            "per bin.", lambda: plots.calibration(evaluation))
    if any(b.get("shares") for p in pairs.values() for b in p.get("budgets", {}).values()):
        add("strategy_shares", "Strategy shares per budget",
            "A router that always picks one method is a fixed strategy in disguise; mixed bars mean it routes.",
            lambda: plots.strategy_shares(evaluation, problems=problems))
    if evaluation.get("learning_curve"):
        add("learning_curve", "How many sweep problems a pair needs",
            "The deployed default's gain over the best fixed strategy against the training problems it was chosen "
            "on (each size: the whole nested comparison run on a draw of that many, scored held out). Where the red "
            "line flattens, more sweep problems stop paying.", lambda: plots.learning_curve(evaluation["learning_curve"]))
    add("importance", "Importance by factor",
        "Gain and prediction SHAP say what moves a predicted accuracy (mostly how hard the problem is); choice "
        "SHAP, centred per problem, says what makes one strategy beat another on the same problem.",
        lambda: plots.importance_by_factor(importance))
    return out


# --------------------------------------------------------------------------- the page


def _cv_metric(manifest: dict) -> str:
    """"CV cross-entropy 0.3467" or "CV regret 0.0512": what the router's tuning minimised, and its value."""
    metric = manifest.get("settings", {}).get("tune_metric", "cross_entropy")
    value = manifest.get("metrics", {}).get(f"cv_{metric}")
    return f"CV {metric.replace('_', '-')} {_fmt(value, '.4f')}"


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec) if isinstance(v, (int, float)) else html.escape(str(v))


def evaluation_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """Pair × budget rows of the evaluation table (missing keys become None)."""
    rows = []
    for name, p in evaluation.get("pairs", {}).items():
        for n, b in sorted(p.get("budgets", {}).items(), key=lambda kv: int(kv[0])):
            r = b.get("router", {})
            ci = r.get("ci95") or [None, None]
            rows.append({"pair": name, "budget": int(n), "router": r.get("accuracy"), "ci_lo": ci[0], "ci_hi": ci[1],
                         "best_fixed": b.get("best_fixed", {}).get("accuracy"),
                         "best_fixed_strategies": b.get("best_fixed", {}).get("strategies", []),
                         "oracle": b.get("oracle", {}).get("accuracy"), "random": b.get("random", {}).get("accuracy"),
                         "gap_recovered": b.get("gap_recovered")})
    return rows


def _table_html(rows: list[dict[str, Any]]) -> str:
    head = ("<tr><th>pair</th><th>N</th><th>router</th><th>95% CI of router − best fixed</th><th>best fixed</th>"
            "<th>oracle</th><th>random</th><th>gap recovered</th></tr>")
    body = []
    for r in rows:
        gain = r["ci_lo"] is not None and r["ci_lo"] > 0
        tip = html.escape(", ".join(r["best_fixed_strategies"]))
        body.append(
            f"<tr><td>{html.escape(r['pair'])}</td><td>{r['budget']}</td>"
            f"<td class='{'win' if gain else ''}'>{_fmt(r['router'])}</td>"
            f"<td>[{_fmt(r['ci_lo'], '+.3f')}, {_fmt(r['ci_hi'], '+.3f')}]</td>"
            f"<td title='{tip}'>{_fmt(r['best_fixed'])}</td><td>{_fmt(r['oracle'])}</td><td>{_fmt(r['random'])}</td>"
            f"<td>{_fmt(r['gap_recovered'], '.2f')}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _importance_html(importance: dict[str, Any]) -> str:
    factors = list(importance["gain"]["share"])
    head = "<tr><th>factor</th><th>split gain</th><th>SHAP (prediction)</th><th>SHAP (choice)</th></tr>"
    body = "".join(f"<tr><td>{html.escape(f)}</td><td>{importance['gain']['share'][f]:.1%}</td>"
                   f"<td>{importance['shap_prediction']['share'].get(f, 0):.1%}</td>"
                   f"<td>{importance['shap_choice']['share'].get(f, 0):.1%}</td></tr>" for f in factors)
    return f"<table>{head}{body}</table>"


def _summary(importance: dict[str, Any]) -> str:
    choice = sorted(importance["shap_choice"]["share"].items(), key=lambda kv: -kv[1])
    pred = max(importance["shap_prediction"]["share"].items(), key=lambda kv: kv[1])
    parts = ", ".join(f"{f} {v:.0%}" for f, v in choice if v > 0)
    return (f"What separates strategies on one problem (choice SHAP): {parts}. "
            f"What moves a predicted accuracy most: {pred[0]} ({pred[1]:.0%} of prediction SHAP).")


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;margin:24px auto;
padding:0 16px;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:4px} h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.88em;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left} td.win{font-weight:bold;color:#b00}
figure{margin:18px 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:.92em;color:#444}
.meta{color:#555;font-size:.9em} code{background:#f4f4f4;padding:0 3px}
"""


def _stops_html(stops: dict[str, dict[str, Any]]) -> str:
    """The adaptive options' stopping per pair (``manifest["deployed"][pair]["adaptive_stops"]``)."""
    from .explain import stop_reasons

    if not stops:
        return ""
    parts = ["<h2>How the adaptive strategies stop</h2><p class='meta'>Estimated at training from the sweep's "
             "stored pools, over the orders the samples could come in: mean samples drawn and why the draw "
             "stopped (agree: the leading answer held its votes; give_up: no answer led after j samples; verified: "
             "the PRM passed a candidate; budget: N reached). A solved problem's own stop is in its trace "
             "(<code>trace.stop</code>, <code>trace.drawn</code>).</p>"]
    for pair, profile in stops.items():
        levels = sorted({lv for v in profile.values() for lv in v.get("levels", {})})
        head = "".join(f"<th>{html.escape(h)}</th>" for h in
                       ("strategy", "N", "accuracy", "drawn", "why it stopped", *[f"drawn, level {lv}" for lv in levels]))
        rows = []
        for key, v in profile.items():
            a = v["all"]
            cells = [html.escape(key), str(v["n"]), f"{a['accuracy']:.3f}", f"{a['drawn']:.1f}",
                     html.escape(stop_reasons(a)),
                     *[f"{v['levels'][lv]['drawn']:.1f}" if lv in v.get("levels", {}) else "" for lv in levels]]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append(f"<h3>{html.escape(pair)}</h3><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
                     "</tbody></table>")
    return "".join(parts)


def render_page(*, title: str, meta: list[str], evaluation: dict[str, Any], importance: dict[str, Any],
                figures: Sequence[Figure], stops: dict[str, dict[str, Any]] | None = None) -> str:
    """The whole page as one string (figures inline)."""
    figs = []
    for f in figures:
        data = base64.b64encode(f.png).decode()
        figs.append(f"<figure id='{f.name}'><h2>{html.escape(f.title)}</h2>"
                    f"<img alt='{html.escape(f.title)}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")
    summary = evaluation.get("gap_recovered")
    skipped = evaluation.get("skipped_pairs") or []
    head = (f"Mode: {html.escape(str(evaluation.get('mode', '?')))}, {evaluation.get('folds', '?')} folds by question, "
            f"{evaluation.get('rows', '?')} rows. Mean gap recovered {_fmt(summary, '.3f')}, "
            f"Brier {_fmt(evaluation.get('brier'), '.4f')}. Bold: the CI of the router's gain excludes 0."
            + (f" Not evaluated (too few complete problems): {html.escape(', '.join(skipped))}." if skipped else ""))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            + "".join(f"<div class='meta'>{m}</div>" for m in meta)
            + f"<h2>Evaluation</h2><p class='meta'>{head}</p>{_table_html(evaluation_rows(evaluation))}"
            + f"<h2>What drives the choice</h2><p>{html.escape(_summary(importance))}</p>"
            + f"<p class='meta'>The saved router's own attributions on these {importance.get('rows', '?')} rows "
              "(in-sample when they are its training data); SHAP in log-odds of accuracy, shares of the sum over "
              "factors. Choice SHAP subtracts each problem's mean over its strategies.</p>"
            + _importance_html(importance)
            + _stops_html(stops or {})
            + "".join(figs) + "</body></html>\n")


def build_report(router: str | Path, data: Sequence[str | Path], out: str | Path, *,
                 eval_path: str | Path | None = None, table: pd.DataFrame | None = None, trials: int = 2,
                 folds: int | None = None, dpi: int = 110, progress: Callable[[str], None] | None = None) -> Path:
    """Write ``out/index.html`` (self-contained), ``out/figures/*.png`` and, when it ran here, ``out/eval.json``.

    ``data`` are snapshot folders (or pass ``table``); ``eval_path`` an ``eval.json`` from
    ``ttsopt evaluate``; ``trials`` and ``folds`` (default: the router's) set the evaluation run
    here; ``dpi`` the figures' resolution. Returns the page's path.
    """
    from ttsopt.data.files import atomic_write_bytes, atomic_write_text
    from ttsopt.selector.artifact import load_artifact

    from ..fit.table import load_training_table
    from .explain import adaptive_stops, global_importance

    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    out = Path(out)
    artifact = load_artifact(router)
    if table is None:
        if not data:
            raise ValueError("no data: give the snapshot folder(s) the router is to be reported on")
        table = load_training_table(list(data), probe_k=artifact.manifest["settings"].get("probe_k"))
    out.mkdir(parents=True, exist_ok=True)
    if eval_path is not None:
        path = Path(eval_path)
        try:
            evaluation = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if "pairs" not in evaluation:
            raise ValueError(f"{path}: not an evaluation (no 'pairs'); write one with `ttsopt evaluate --json`")
        eval_note = f"evaluation read from <code>{html.escape(str(path))}</code>"
    else:
        say(f"evaluating (cross-fitted, {trials} Optuna trials per fold)")
        evaluation = run_evaluation(artifact, table, trials=trials, folds=folds)
        evaluation["router"] = str(router)
        atomic_write_text(out / "eval.json", json.dumps(evaluation, indent=1, default=float) + "\n")
        eval_note = f"evaluation run for this report ({trials} trials per fold), saved as <code>eval.json</code>"
    say("importance (gain, SHAP)")
    importance = global_importance(artifact.booster, artifact.pipeline, table)
    say("figures")
    figures = render_figures(artifact, table, evaluation, importance, dpi=dpi)
    (out / "figures").mkdir(exist_ok=True)
    for f in figures:
        atomic_write_bytes(out / "figures" / f"{f.name}.png", f.png)
    m = artifact.manifest
    counts = _pair_problem_counts(table)
    meta = [f"Router <code>{html.escape(str(router))}</code> (created {html.escape(str(m.get('created_at', '?')))}, "
            f"{m.get('metrics', {}).get('trials_in_study', '?')} Optuna trials, {_cv_metric(m)}, "
            f"{m.get('rounds', '?')} trees).",
            "Data: " + html.escape(", ".join(str(d) for d in data) or "a table given in Python") +
            f" — {len(table)} rows, " + html.escape(", ".join(f"{k}: {v} problems" for k, v in counts.items())) + ".",
            eval_note + ".",
            f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in "
            f"{time.perf_counter() - start:.0f} s by <code>ttsopt report</code>."]
    page = render_page(title=f"ttsopt router report: {m.get('name', Path(router).name)}", meta=meta,
                       evaluation=evaluation, importance=importance, figures=figures,
                       stops=adaptive_stops(m))
    atomic_write_text(out / PAGE, page)
    return out / PAGE


BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def screenshot(page: str | Path, png: str | Path, *, width: int = 1280, height: int = 2000,
               browser: str | None = None, timeout_s: float = 120) -> Path:
    """The top ``width`` × ``height`` pixels of the page as rendered by a headless Chromium, saved as ``png``.

    Uses the first browser of :data:`BROWSERS` on PATH (Debian: ``apt-get install
    chromium-headless-shell``); nothing is downloaded. Raises RuntimeError when none is found or
    it fails.
    """
    import os
    import shutil
    import subprocess

    page, png = Path(page).resolve(), Path(png).resolve()
    exe = browser or next((b for b in BROWSERS if shutil.which(b)), None)
    if exe is None or shutil.which(exe) is None:
        raise RuntimeError("no headless Chromium on PATH (looked for " + ", ".join(BROWSERS) + "); on Debian or "
                           "Ubuntu: apt-get install --no-install-recommends chromium-headless-shell")
    png.parent.mkdir(parents=True, exist_ok=True)
    args = [exe, "--headless", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}",
            f"--screenshot={png}", page.as_uri()]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox on
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or not png.is_file():
        raise RuntimeError(f"{exe} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return png


__all__ = ["BROWSERS", "Figure", "PAGE", "build_report", "evaluation_rows", "render_figures", "render_page",
           "run_evaluation", "screenshot"]
