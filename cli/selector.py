"""The selector offline: ``ttsopt train`` (tune and fit the router) and ``ttsopt evaluate``
(cross-fitted, or as it is on data the router never saw, or straight from snapshot folders)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import check_snapshots, console, fail, progress_bar


def train(
    data: list[Path] = typer.Option(..., help="snapshot folder(s) of sweeps (repeat --data for several)"),
    out: Path = typer.Option(..., help="router directory to write (model.txt + manifest.json + study)"),
    trials: int = typer.Option(30, help="Optuna trials to add to the study"),
    timeout: Optional[float] = typer.Option(None, help="stop tuning after this many seconds"),
    folds: int = typer.Option(5, help="cross-validation folds, grouped by question"),
    seed: int = typer.Option(0),
    components: int = typer.Option(8, help="PCA components of the question embedding"),
    probe_k: Optional[int] = typer.Option(None, help="use the k-sample probe's features (1, 2 or 4)"),
    study: Optional[str] = typer.Option(None, help="Optuna storage URL; default sqlite:///OUT/study.sqlite3 "
                                        "(a second `ttsopt train` resumes it)"),
    gate_models: bool = typer.Option(False, help="fit the verify-first cascade for PRMs with weights too: "
                                     "they score the snapshot's stored CoTs here (calc always does, for free)"),
    device: str = typer.Option("cpu", help="torch device for --gate-models"),
    tune_metric: str = typer.Option("cross_entropy", help="what Optuna minimises: `cross_entropy` (grouped CV "
                                    "loss) or `regret` (of the router's argmax within each budget N)"),
    choose_default: bool = typer.Option(True, help="run the nested cross-fitted comparison (router, best fixed, "
                                        "per-level rule, cascades; adaptive strategies among the options) and "
                                        "deploy its winner per pair and N (OUT/deployed-eval.json has the evidence); "
                                        "--no-choose-default deploys the LightGBM argmax, as before"),
) -> None:
    """Tune (Optuna, TPE, grouped CV) and fit the LightGBM selector; choose the deployed default by a nested
    comparison; write the router artifact."""
    from ttsopt.train.evaluation.training import train_deployed
    from ttsopt.train.fit.tuning import TrainSettings

    con = console()
    check_snapshots(data, con)
    try:
        settings = TrainSettings(trials=trials, timeout_s=timeout, folds=folds, seed=seed, n_components=components,
                                 probe_k=probe_k, tune_metric=tune_metric)
    except ValueError as e:
        fail(str(e), con)
    with progress_bar(con) as bar:
        comparison = bar.add_task("comparison: folds fitted", total=folds) if choose_default else None
        task = bar.add_task("Optuna trials", total=trials)
        manifest = train_deployed(data, out, settings, storage=study,
                                  progress=lambda done, total: bar.update(task, completed=done),
                                  eval_progress=(lambda done, total: bar.update(comparison, completed=done, total=total))
                                  if choose_default else None,
                                  gate_models=gate_models, device=device, choose=choose_default)
    m = manifest["metrics"]
    metric = manifest["settings"].get("tune_metric", "cross_entropy")
    con.print(f"router {out}: {m['rows']} rows, {len(manifest['catalogue'])} pairs, cv {metric.replace('_', '-')} "
              f"{m[f'cv_{metric}']:.4f}, {m['trials_in_study']} trials in the study, {m['train_seconds']:.1f} s")
    for pair, entry in (manifest.get("deployed") or {}).items():
        modes = ", ".join(f"N={n}: {b['mode']}" for n, b in sorted(entry["budgets"].items(), key=lambda kv: int(kv[0])))
        con.print(f"deployed default, {pair}: {modes}")


#: what an evaluation without --router tunes with where a flag does not say
SNAPSHOT_DEFAULTS = {"trials": 10, "folds": 5, "seed": 0, "tune_metric": "cross_entropy"}

_MODE_NOTES = {
    "cross-fitted": "evaluating by cross-fitting: this is the router's training data (refit and re-tuned per fold)",
    "as-is": "evaluating the saved router as it is: this is not its training data",
}


def evaluate(
    router: Optional[Path] = typer.Option(None, help="router directory from `ttsopt train`; without it, a "
                                          "cross-fitted evaluation straight from the snapshot folders"),
    data: list[Path] = typer.Option(..., help="snapshot folder(s) to evaluate on"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the full evaluation as JSON"),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="write the tables as markdown"),
    trials: Optional[int] = typer.Option(None, help="Optuna trials per fold (default: the router's; 10 without "
                                         "--router)"),
    probe_k: list[int] = typer.Option([], "--probe-k", help="also evaluate a router with probe features of k "
                                      "samples (repeatable; snapshots without probes are skipped)"),
    plot_out: Optional[Path] = typer.Option(None, "--plot", help="write the accuracy-against-compute figure as PNG "
                                            "(cross-fitted evaluations: the curves need refits)"),
    folds: Optional[int] = typer.Option(None, help="cross-validation folds, grouped by question (default: the "
                                        "router's; 5 without --router)"),
    seed: Optional[int] = typer.Option(None, help="seed of the folds and the tuning (default: the router's; 0 "
                                       "without --router)"),
    tune_metric: Optional[str] = typer.Option(None, help="what Optuna minimises in each fold: `cross_entropy` or "
                                              "`regret` (default: the router's; cross_entropy without --router)"),
    min_problems: Optional[int] = typer.Option(None, help="pairs with fewer complete problems train the models "
                                               "but are not evaluated (default 30)"),
    lopo: bool = typer.Option(True, "--lopo/--no-lopo", help="also evaluate leaving one pair out (cross-fitted "
                              "evaluations)"),
    learning_curve: int = typer.Option(0, "--learning-curve", help="add the deployed default's learning curve: "
                                       "the nested comparison rerun on draws of 25/50/100/200 training problems per "
                                       "fold, this many draws per size (without --router; 0: none)"),
) -> None:
    """Cross-fitted evaluation on the router's own data (refit and re-tuned per fold, grouped by question).

    On data the router never saw, the saved router as it is. Without --router, a cross-fitted
    evaluation straight from the snapshot folders, tuned as --trials, --folds, --seed and
    --tune-metric say.
    """
    from ttsopt.data.files import atomic_write_text
    from ttsopt.train.evaluation.evaluate import markdown

    con = console()
    check_snapshots(data, con)
    if router is None:
        from ttsopt.train.evaluation.evaluate import evaluate_snapshots
        from ttsopt.train.fit.tuning import TrainSettings

        given = {"trials": trials, "folds": folds, "seed": seed, "tune_metric": tune_metric}
        try:
            settings = TrainSettings(**{k: SNAPSHOT_DEFAULTS[k] if v is None else v for k, v in given.items()})
        except ValueError as e:
            fail(str(e), con)
        con.print(f"evaluating by cross-fitting on {', '.join(map(str, data))} (no router: refit and tuned per fold, "
                  f"{settings.trials} trials each)")
        extra = {} if min_problems is None else {"min_problems": min_problems}
        bar, tick = _fits_bar(con, settings.folds)
        with bar:
            report = evaluate_snapshots(data, settings, probe_k=probe_k, lopo=lopo, progress=tick,
                                        learning_repeats=learning_curve, **extra)
    else:
        if learning_curve:
            fail("--learning-curve reruns the comparison from the snapshots: give it without --router", con)
        from ttsopt.selector.artifact import ArtifactError, load_artifact
        from ttsopt.train.evaluation.mode import CROSS_FITTED, evaluate_router, router_settings

        try:
            artifact = load_artifact(router)
        except ArtifactError as e:
            fail(str(e), con)
        try:
            settings = router_settings(artifact.manifest, trials=trials, folds=folds, seed=seed,
                                       tune_metric=tune_metric)
        except ValueError as e:
            fail(str(e), con)
        bar, tick = _fits_bar(con, settings.folds)

        def say(mode: str) -> None:
            con.print(_MODE_NOTES[mode])
            if mode == CROSS_FITTED:
                bar.start()

        try:
            report = evaluate_router(artifact, data, settings=settings, probe_k=probe_k, min_problems=min_problems,
                                     lopo=lopo, progress=tick, say=say, name=str(router))
        except ValueError as e:
            bar.stop()
            fail(str(e), con)
        finally:
            bar.stop()
        report["router"] = str(router)
    text = markdown(report)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(report, indent=1, default=float) + "\n")
    if markdown_out is not None:
        atomic_write_text(markdown_out, text)
    if plot_out is not None:
        if any(p.get("curve") for p in report["pairs"].values()):
            from ttsopt.train.report.plots import accuracy_vs_flops, to_png

            plot_out.write_bytes(to_png(accuracy_vs_flops(report)))
        else:
            con.print("[yellow]no figure:[/] an evaluation as it is has no accuracy-against-compute curves")
    print(text)


def _fits_bar(con, folds: int):
    """(a progress display with one bar for the evaluation's fits, ``progress(done, total)`` drawing on it):
    ``folds`` fits to begin with; the evaluation says how many more (probes, leave one pair out)."""
    bar = progress_bar(con)
    task = bar.add_task("fits (tuned inside each)", total=folds)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)
