"""``ttsopt quickstart``: the whole loop on the embedded default, over train/quickstart.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from .common import SweepBars, console, fail, progress_bar


class _QuickstartBars:
    """The quickstart's stages as rich output: a rule per stage, bars for the sweep, trials and folds."""

    def __init__(self, con, progress):
        self.con, self.progress = con, progress

    def stage(self, name: str) -> None:
        self.con.rule(f"[bold]{name}")

    def sweep_progress(self):
        return SweepBars(self.progress)

    def counter(self, name: str, total: int):
        task = self.progress.add_task(name, total=total)
        return lambda done, _total: self.progress.update(task, completed=done)


def quickstart(
    out: Path = typer.Option(Path("ttsopt-quickstart"), help="folder for the store, snapshot, router, "
                             "evaluation and report (rerun to resume)"),
    limit: Optional[int] = typer.Option(None, help="only the first K problems of the sweep (a multiple of 5)"),
    trials: int = typer.Option(10, help="Optuna trials for the router, and per fold in the evaluation"),
    report: bool = typer.Option(True, help="write the HTML report"),
) -> None:
    """The whole loop on the embedded default: a small sweep, training, held-out evaluation, report.

    Nothing is downloaded. Rerunning after a kill resumes where it stopped.
    """
    from ttsopt.train.quickstart import NEXT_STEPS, QuickstartSettings, run_quickstart

    con = console()
    t0 = time.perf_counter()
    settings = QuickstartSettings(out=out, limit=limit, trials=trials, report=report)
    with progress_bar(con) as bar:
        try:
            result = run_quickstart(settings, _QuickstartBars(con, bar))
        except (ValueError, RuntimeError) as e:
            bar.stop()
            fail(str(e), con)
    print(result.eval_markdown)
    spent = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    con.print(f"done in {time.perf_counter() - t0:.0f} s ({spent})"
              + (f"; already there: {', '.join(result.skipped)}" if result.skipped else ""))
    con.print(f"evaluation: {result.eval_json} (every rule: {result.out / 'eval.md'})"
              + (f"\nreport: {result.report}" if result.report else ""))
    con.print("\n[bold]next[/]")
    for what, command in NEXT_STEPS:
        con.print(f"  {what}:\n    [cyan]{command.format(router=result.router)}[/]")
