"""What drives a router: ``ttsopt explain`` (importance by factor, one problem's candidates) and
``ttsopt report`` (the self-contained HTML page)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import check_snapshots, console, fail


def _print_stops(con, stops: dict) -> None:
    """The adaptive options' stopping, per pair: samples drawn on average and why they stopped."""
    from rich.table import Table

    from ttsopt.train.report.explain import stop_reasons

    for pair, profile in stops.items():
        levels = sorted({lv for v in profile.values() for lv in v.get("levels", {})})
        t = Table(title=f"{pair}: how the adaptive options stop (offline, over the sweep's sample orders)")
        for col in ("strategy", "N", "accuracy", "samples drawn", "why it stopped", *[f"drawn, level {lv}" for lv in levels]):
            t.add_column(col, justify="left" if col in ("strategy", "why it stopped") else "right")
        for key, v in profile.items():
            a = v["all"]
            t.add_row(key, str(v["n"]), f"{a['accuracy']:.3f}", f"{a['drawn']:.1f}", stop_reasons(a),
                      *[f"{v['levels'][lv]['drawn']:.1f}" if lv in v.get("levels", {}) else "" for lv in levels])
        con.print(t)


def _print_explanation(con, result: dict) -> None:
    from rich.table import Table

    g = result.get("global")
    if g is not None:
        t = Table(title=f"Importance by factor ({g['rows']} rows; SHAP in {g['unit']})")
        for col in ("factor", "split gain", "SHAP: prediction", "SHAP: choice"):
            t.add_column(col, justify="left" if col == "factor" else "right")
        for f, share in g["gain"]["share"].items():
            t.add_row(f, f"{share:.1%}", f"{g['shap_prediction']['share'].get(f, 0):.1%}",
                      f"{g['shap_choice']['share'].get(f, 0):.1%}")
        con.print(t)
        t = Table(title="Features that separate strategies on one problem (mean |SHAP| centred per problem)")
        for col in ("feature", "factor", "choice", "prediction", "gain"):
            t.add_column(col, justify="left" if col in ("feature", "factor") else "right")
        for f in g["features"][:10]:
            t.add_row(f["feature"], f["factor"], f"{f['shap_choice']:.4f}", f"{f['shap_prediction']:.4f}",
                      f"{f['gain']:.0f}")
        con.print(t)
    for p in result.get("problems", []):
        known = f", difficulty {p['difficulty']}" if "difficulty" in p else ""
        t = Table(title=f"{p['pair']} · {p['problem_id']} · budget N={p['budget']}{known}: {p['winner']} wins")
        for col in ("", "strategy", "n", "predicted", "observed", "tokens"):
            t.add_column(col, justify="left" if col in ("", "strategy") else "right")
        for i, c in enumerate(p["candidates"][:12]):
            obs = "" if c["observed"] is None else f"{c['observed']:.3f}"
            t.add_row("★" if i == 0 else "", c["strategy"], str(c["n"]), f"{c['predicted']:.3f}", obs,
                      f"{c['tokens']:.0f}")
        if len(p["candidates"]) > 12:
            t.add_row("", f"… {len(p['candidates']) - 12} more (--json for all)", "", "", "", "")
        con.print(t)
        t = Table(title=f"What moved the winner's prediction (SHAP in log-odds; expected value "
                        f"{p['expected_value']:+.3f})")
        for col in ("feature", "factor", "value", "SHAP"):
            t.add_column(col, justify="right" if col in ("SHAP", "value") else "left")
        for f in p["winner_features"]:
            t.add_row(f["feature"], f["factor"], _short(f["value"]), f"{f['shap']:+.3f}")
        con.print(t)
        if "runner_up" in p:
            t = Table(title=f"Its lead over {p['runner_up']} (SHAP winner − runner-up)")
            for col in ("feature", "factor", "winner", "runner-up", "SHAP"):
                t.add_column(col, justify="left" if col in ("feature", "factor") else "right")
            for f in p["lead_features"]:
                t.add_row(f["feature"], f["factor"], _short(f["value"]), _short(f.get("runner_up_value")),
                          f"{f['shap']:+.3f}")
            con.print(t)
    if result.get("adaptive_stops"):
        _print_stops(con, result["adaptive_stops"])


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def explain(
    router: Path = typer.Option(..., help="router directory from `ttsopt train`"),
    data: Optional[list[Path]] = typer.Option(None, help="snapshot folder(s): global importance, and --problem"),
    problem: Optional[str] = typer.Option(None, help="a problem id of the data: why its strategy won"),
    question: Optional[str] = typer.Option(None, help="a question's text: its candidates and why the winner won"),
    budget: Optional[int] = typer.Option(None, help="budget N: candidates with n <= N (default: all)"),
    pair: Optional[str] = typer.Option(None, help="only this pair (e.g. smollm2-135m+calc)"),
    top: int = typer.Option(8, help="features to show per problem"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the explanation as JSON ('-' for stdout)"),
) -> None:
    """Which factors drive the router's choice (gain, SHAP by factor), and why one problem's strategy won."""
    from ttsopt.data.files import atomic_write_text
    from ttsopt.selector.artifact import ArtifactError
    from ttsopt.train.report.explain import explain as run_explain

    con = console()
    data = data or []
    if not data and question is None:
        fail("give --data (global importance, --problem) or --question", con)
    check_snapshots(data, con)
    try:
        result = run_explain(router, data, problem=problem, question=question, budget=budget, pair=pair, top=top)
    except (ArtifactError, ValueError) as e:
        fail(str(e), con)
    text = json.dumps(result, indent=1, default=str) + "\n"
    if json_out is not None and str(json_out) == "-":
        print(text, end="")
        return
    if json_out is not None:
        atomic_write_text(json_out, text)
    from rich.console import Console

    _print_explanation(Console(), result)  # the tables are the command's output: stdout


def report(
    router: Path = typer.Option(..., help="router directory from `ttsopt train`"),
    data: list[Path] = typer.Option(..., help="snapshot folder(s) to report on (repeat --data for several)"),
    out: Path = typer.Option(Path("report"), help="directory for index.html, figures/ and eval.json"),
    eval_json: Optional[Path] = typer.Option(None, "--eval", help="eval.json from `ttsopt evaluate --json` "
                                             "(default: run a cross-fitted evaluation here)"),
    trials: int = typer.Option(2, help="Optuna trials per fold when the evaluation runs here"),
    screenshot: Optional[Path] = typer.Option(None, help="also save the page's top as PNG (needs a headless "
                                              "Chromium on PATH, e.g. Debian's chromium-headless-shell)"),
) -> None:
    """A self-contained HTML report (figures inline): evaluation, decisions, calibration, importance."""
    from ttsopt.selector.artifact import ArtifactError
    from ttsopt.train.report.html import build_report

    con = console()
    check_snapshots(data, con)
    try:
        page = build_report(router, data, out, eval_path=eval_json, trials=trials,
                            progress=lambda msg: con.print(f"[dim]{msg}…[/]"))
    except (ArtifactError, ValueError) as e:
        fail(str(e), con)
    con.print(f"report: {page} ({page.stat().st_size / 1e6:.1f} MB, self-contained); figures in {page.parent / 'figures'}")
    if screenshot is not None:
        from ttsopt.train.report.html import screenshot as take

        try:
            con.print(f"screenshot: {take(page, screenshot)}")
        except (RuntimeError, OSError) as e:
            con.print(f"[yellow]no screenshot:[/] {e}")
            raise typer.Exit(1)
