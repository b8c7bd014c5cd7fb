"""``ttsopt quickstart``: the whole loop on the embedded default, resumable, in one folder.

sweep (``arith-quickstart``) -> problem features -> snapshot -> train (Optuna + LightGBM) ->
cross-fitted evaluation on held-out questions -> HTML report. Every stage writes its result
into ``out/`` and is skipped on a rerun when its result is already there for the same inputs,
so a run killed at any point resumes where it stopped: the sweep's store resumes unit by unit,
the Optuna study lives in SQLite, and the evaluation and the report are keyed by the hash of
the training data they were made from.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ttsopt.data.files import atomic_write_text

PRESET = "arith-quickstart"


@dataclass
class QuickstartSettings:
    """Every knob of the quickstart; the defaults fit a 2-core laptop CPU in minutes."""

    out: Path = Path("ttsopt-quickstart")
    config: str = PRESET
    limit: int | None = None  # the first K problems of the preset (a multiple of its chunk_size)
    trials: int = 10  # Optuna trials for the router, and per fold in the evaluation
    folds: int = 5
    report: bool = True
    # sweep processes, one llama.cpp thread each, sharing one store (they lease its chunks): decoding a
    # small model is bound by per-step overhead, so two single-thread processes outrun one
    # two-thread process on two cores
    workers: int = field(default_factory=lambda: max(1, min(2, os.cpu_count() or 1)))

    def __post_init__(self) -> None:
        self.out = Path(self.out)


@dataclass
class QuickstartResult:
    out: Path
    snapshot: Path
    router: Path
    eval_json: Path
    eval_markdown: str
    report: Path | None
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


class Stages:
    """How the quickstart tells its caller what it is doing (the CLI draws rich bars from it)."""

    def stage(self, name: str) -> None:  # a new stage begins
        pass

    def sweep_progress(self) -> Any:  # the sweep's progress protocol (start/advance), or None
        return None

    def counter(self, name: str, total: int) -> Callable[[int, int], None] | None:
        return None


def _load_config(name: str):
    from .sweep.config import load_config
    from .sweep.presets import preset_config_path

    path = Path(name)
    return load_config(path if path.exists() else preset_config_path(name))


def run_sweep_stage(settings: QuickstartSettings, stages: Stages) -> tuple[Path, dict[str, int]]:
    """Sweep into ``out/outcomes.sqlite`` (resuming), write the problem features, export the snapshot."""
    from ttsopt.data import load_problems
    from .sweep.driver import run_sweep, write_problem_features
    from .sweep.snapshot import export_snapshot
    from .sweep.store import OutcomeStore
    from .sweep.units import order_problems

    cfg = _load_config(settings.config)
    if settings.limit is not None and settings.limit % cfg.chunk_size:
        raise ValueError(f"limit must be a multiple of the sweep's chunk_size ({cfg.chunk_size}), "
                         f"got {settings.limit}")
    problems = order_problems(load_problems(cfg.problems, **cfg.problem_options), cfg.order)[:settings.limit]
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    snapshot = out / "snapshot"
    store_path = out / "outcomes.sqlite"
    n_chunks = len(range(0, len(problems), cfg.chunk_size))
    with OutcomeStore(store_path) as db:
        before = len(db.done_units())
    if settings.workers > 1 and n_chunks > 1:
        _sweep_in_processes(settings, store_path, n_chunks, cfg, len(problems), stages)
    with OutcomeStore(store_path) as db:
        counts = run_sweep(cfg, db, problems, progress=None if settings.workers > 1 else stages.sweep_progress())
        counts["done"] = len(db.done_units()) - before
        features = write_problem_features(problems, out, embeddings=True)
        export_snapshot(db, snapshot, name=cfg.name, features=features)
    return snapshot, counts


def _sweep_in_processes(settings: QuickstartSettings, store_path: Path, n_chunks: int, cfg, n_problems: int,
                        stages: Stages) -> None:
    """``ttsopt sweep`` in ``workers`` processes on one store, with one progress bar: the same
    command each, and they split the chunks between them by leasing (a slower process simply
    takes fewer). Each process logs to ``out/sweep-worker-K.log``; a failed one is an error quoting its log's
    end. A kill leaves the store consistent (one transaction per unit), so a rerun resumes.
    """
    from .sweep.driver import plan_sweep
    from .sweep.store import OutcomeStore

    wanted = {u.key for units in plan_sweep(cfg, n_problems).values() for u in units}
    tick = stages.counter("sweep units", len(wanted))
    env = {**os.environ, "TTSOPT_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    procs, logs = [], []
    previous = None
    try:
        for k in range(min(settings.workers, n_chunks)):
            log_path = settings.out / f"sweep-worker-{k}.log"
            log = open(log_path, "ab")
            logs.append((log_path, log))
            cmd = [sys.executable, "-m", "ttsopt.cli", "sweep", settings.config, "--store", str(store_path),
                   "--no-embeddings"]
            if settings.limit is not None:
                cmd += ["--limit", str(settings.limit)]
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                          preexec_fn=_die_with_parent))
        previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
        while any(p.poll() is None for p in procs):
            time.sleep(2.0)
            if tick is not None:
                with OutcomeStore(store_path) as db:
                    tick(len(wanted & db.done_units()), len(wanted))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)
        for _, log in logs:
            log.close()
    failed = [(path, p.returncode) for (path, _), p in zip(logs, procs) if p.returncode != 0]
    if failed:
        path, code = failed[0]
        tail = path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"a sweep process exited with {code}; the end of {path}:\n{tail}")
    if tick is not None:
        with OutcomeStore(store_path) as db:
            tick(len(wanted & db.done_units()), len(wanted))


def _raise_interrupt(signum, frame):  # SIGTERM: stop the sweep processes too, then stop
    raise KeyboardInterrupt


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the quickstart dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


#: Bumped when the evaluation gains a section, so that an older eval.json is recomputed.
EVAL_FORMAT = 5  # 5: the deployed default (nested choice among the modes); 4: the level cascade


def _eval_is_current(path: Path, data_hash: str, trials: int) -> bool:
    if not path.is_file():
        return False
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return (report.get("training_data_hash") == data_hash and report.get("settings", {}).get("trials") == trials
            and report.get("eval_format") == EVAL_FORMAT)


def run_quickstart(settings: QuickstartSettings, stages: Stages | None = None) -> QuickstartResult:
    """The whole loop; each stage skipped when its output is already there for the same inputs."""
    from ttsopt.selector.artifact import ArtifactError, load_artifact
    from .evaluation.training import deployed_record
    from .evaluation.evaluate import evaluate, markdown
    from .fit.build import train_router
    from .fit.cascade import load_gates
    from .fit.options import load_options
    from .fit.table import load_training_table, table_hash
    from .fit.tuning import TrainSettings

    stages = stages or Stages()
    seconds: dict[str, float] = {}
    skipped: list[str] = []
    out = settings.out

    stages.stage("sweep")
    t = time.perf_counter()
    snapshot, counts = run_sweep_stage(settings, stages)
    seconds["sweep"] = time.perf_counter() - t
    if counts.get("done", 0) == 0:
        skipped.append("sweep")

    table = load_training_table([snapshot])
    data_hash = table_hash(table)
    gates, rest = load_gates([snapshot]), load_options([snapshot])  # once, for training and evaluation
    train_settings = TrainSettings(trials=settings.trials, folds=settings.folds)
    router = out / "router"
    stages.stage("train")
    t = time.perf_counter()
    # the nested comparison first: it chooses the mode the router deploys (ttsopt train does the same)
    eval_json = out / "eval.json"
    if _eval_is_current(eval_json, data_hash, settings.trials):
        report = json.loads(eval_json.read_text())
        skipped.append("evaluate")
    else:
        # one pair, so no leave-one-pair-out; every pair with a problem per fold is evaluated
        report = evaluate(table, train_settings, progress=stages.counter("fits (tuned inside each)", settings.folds),
                          min_problems=settings.folds, lopo=False, gates=gates, rest=rest)
        report["eval_format"] = EVAL_FORMAT
        report["router"] = str(router)
        report["training_data_hash"] = data_hash
        atomic_write_text(eval_json, json.dumps(report, indent=1, default=float) + "\n")
    seconds["evaluate"] = time.perf_counter() - t
    t = time.perf_counter()
    deployed = deployed_record(report, table, rest)
    current = None
    try:
        current = load_artifact(router)
    except ArtifactError:
        pass
    if (current is not None and current.manifest["training_data"]["hash"] == data_hash
            and current.manifest["settings"].get("trials") == settings.trials
            and current.manifest.get("deployed") == deployed):
        skipped.append("train")
    else:
        train_router([snapshot], router, train_settings, progress=stages.counter("Optuna trials", settings.trials),
                     gates=gates, rest=rest, deployed=deployed)
    seconds["train"] = time.perf_counter() - t

    stages.stage("evaluate")
    t = time.perf_counter()
    atomic_write_text(out / "eval.md", markdown(report))
    text = summary(report)
    seconds["evaluate"] += time.perf_counter() - t

    page = None
    if settings.report:
        stages.stage("report")
        t = time.perf_counter()
        from .report.html import build_report

        page = build_report(router, [snapshot], out / "report", eval_path=eval_json)
        seconds["report"] = time.perf_counter() - t
    return QuickstartResult(out, snapshot, router, eval_json, text, page, seconds, skipped)


def summary(report: dict[str, Any]) -> str:
    """The evaluation in one table per pair: what a newcomer should read first (eval.md has every rule)."""
    from .evaluation.markdown import deployed_table

    lines = deployed_table(report) + [f"Held-out evaluation ({report.get('mode', 'cross-fitted')}, {report.get('folds')} folds by question; "
             "router = LightGBM's pick within the budget; CI = paired bootstrap 95% of router − best fixed)", "",
             "| pair | N | router | 95% CI vs best fixed | best fixed (train folds) | oracle | gap recovered |",
             "|---|---|---|---|---|---|---|"]
    for name, pair in report.get("pairs", {}).items():
        for n, b in pair.get("budgets", {}).items():
            ci = b["router"].get("ci95") or [float("nan")] * 2
            lines.append(f"| {name} | {n} | {b['router']['accuracy']:.3f} | [{ci[0]:+.3f}, {ci[1]:+.3f}] | "
                         f"{b['best_fixed']['accuracy']:.3f} | {b['oracle']['accuracy']:.3f} | "
                         f"{b['gap_recovered']:+.2f} |")
    from .evaluation.cascade import default_variant, default_variant_name

    cascades = {n: default_variant(p["cascade"]) for n, p in report.get("pairs", {}).items() if "cascade" in p}
    names = {default_variant_name(p["cascade"]) for p in report.get("pairs", {}).values() if "cascade" in p}
    plan = {"level": "level, predicted from its text", "binned": "bin of predicted CoT accuracy", "plain": "budget"}
    if cascades:
        lines += ["", "Verify first (`solve --cascade true`): the greedy CoT, checked by the PRM, kept or escalated by "
                  "the plan fitted for the question's " + " or ".join(plan[n] for n in sorted(names) if n in plan), "",
                  "| pair | N | cascade | 95% CI vs best fixed | GFLOPs/problem: best fixed → cascade | escalated |",
                  "|---|---|---|---|---|---|"]
        for name, c in cascades.items():
            for n, b in c["budgets"].items():
                fixed = report["pairs"][name]["budgets"][n]["best_fixed"]
                lines.append(f"| {name} | {n} | {b['accuracy']:.3f} | [{b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}] | "
                             f"{fixed.get('flops', float('nan')) / 1e9:.0f} → {b['flops'] / 1e9:.0f} | "
                             f"{b['escalated']:.0%} |")
    lines.append("")
    for name, pair in report.get("pairs", {}).items():
        aiq = pair.get("curve", {}).get("aiq")
        if aiq:
            lines.append(f"{name}, area under the accuracy-vs-FLOPs hull (AIQ): router {aiq['router']:.3f}, "
                         f"per-level rule {aiq['per_level_rule']:.3f}, fixed strategies {aiq['fixed']:.3f}, "
                         f"oracle {aiq['oracle']:.3f}"
                         + (f", verify-first cascade {cascades[name]['curve']['aiq']:.3f}" if name in cascades else ""))
    if report.get("gap_recovered") is not None:
        lines.append(f"mean gap recovered {report['gap_recovered']:+.2f}, Brier {report['brier']:.4f}")
    return "\n".join(lines) + "\n"


NEXT_STEPS = (
    ("route a question", 'ttsopt route "What is 7 * 8?" --router {router} --budget 8'),
    ("serve it (OpenAI-compatible, 127.0.0.1:8000)", "ttsopt serve --router {router}"),
    ("train on your own pair", "ttsopt sweep my_sweep.yaml --snapshot snap/ && ttsopt train --data snap/ --out my-router"),
)


__all__ = ["EVAL_FORMAT", "NEXT_STEPS", "PRESET", "QuickstartResult", "QuickstartSettings", "Stages", "run_quickstart",
           "run_sweep_stage", "summary"]
