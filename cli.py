"""The ``ttsopt`` command.

Heavy imports (torch, transformers) happen inside commands, so ``ttsopt --help`` is instant.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    help="ttsopt: learn which test-time-scaling strategy is compute-optimal per problem, and route to it.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _console():
    from rich.console import Console

    return Console(stderr=True)


@app.command()
def version() -> None:
    """Print the version."""
    from ttsopt import __version__

    typer.echo(__version__)


@app.command()
def models() -> None:
    """List the embedded model presets and PRM families, and whether each preset is installed."""
    from rich.table import Table

    from ttsopt.search.engines.models import PRESETS, ModelNotInstalledError, preset_gguf_path
    from ttsopt.search.registry import PRM_FAMILIES

    table = Table(title="policy presets")
    for col in ("name", "installed", "description"):
        table.add_column(col)
    for name, preset in PRESETS.items():
        try:
            preset_gguf_path(name)
            ok = "yes"
        except ModelNotInstalledError:
            ok = "no"
        table.add_row(name, ok, preset.description)
    con = _console()
    con.print(table)
    con.print("PRM families: " + ", ".join(PRM_FAMILIES) + "   (e.g. --prm calc, --prm judge:smollm2-135m)")


@app.command()
def run(
    policy: str = typer.Option("smollm2-135m", help="policy spec: preset, hf:PATH, FILE.gguf, openai:URL#MODEL, vllm:MODEL"),
    problems: str = typer.Option("builtin:arith", help="problem source: a .jsonl file, builtin:arith, hf:NAME"),
    strategy: str = typer.Option("majority", help="cot | majority | best_of_n | beam | dvts"),
    n: int = typer.Option(8, help="budget N: samples (majority, best_of_n), beams x width (beam), leaves (dvts)"),
    m: int = typer.Option(4, help="beam width (beam) or expansion per subtree (dvts)"),
    prm: Optional[str] = typer.Option(None, help="PRM spec: calc, judge (the policy's own model), judge:MODEL, math-shepherd:PATH, ..."),
    pair: Optional[str] = typer.Option(None, help="a named (policy, PRM) pair, e.g. smollm2-135m+calc; sets --policy and --prm"),
    agg: str = typer.Option("last", help="step-score aggregation: min | last | avg | prod"),
    vote: str = typer.Option("prm_vote", help="final answer: majority | prm_max | prm_vote (PRM methods)"),
    max_depth: int = typer.Option(10, help="step limit for beam search and DVTS"),
    limit: Optional[int] = typer.Option(None, help="take the first K problems"),
    per_level: Optional[int] = typer.Option(None, help="builtin:arith only: problems per level"),
    seed: int = typer.Option(0, help="sampling seed"),
    temperature: float = typer.Option(0.7, help="sampling temperature"),
    max_tokens: int = typer.Option(256, help="max generated tokens of a full solution"),
    batch: int = typer.Option(8, help="problems per search batch (results are written after each batch)"),
    device: str = typer.Option("cpu", help="torch device for local models"),
    out: Path = typer.Option(Path("runs/run.jsonl"), help="per-problem results (JSONL, appended batch by batch)"),
    resume: bool = typer.Option(False, help="skip problems already in --out for this strategy"),
    engine: str = typer.Option("transformers", help="engine for presets and GGUF files: transformers | llamacpp"),
) -> None:
    """Run one strategy over a problem set; print accuracy (overall and per level), tokens, FLOPs and wall time."""
    con = _console()
    if pair:
        from ttsopt.search.pairs import resolve_pair

        try:
            named = resolve_pair(pair)
        except KeyError as e:
            con.print(f"[red]error:[/] {e.args[0]}")
            raise typer.Exit(2)
        policy, prm = named.policy, named.prm
    if prm:
        from ttsopt.search.pairs import resolve_prm_spec

        prm = resolve_prm_spec(prm, policy)
    strat = _strategy_or_exit(con, strategy, n=n, m=m, agg=agg, vote=vote, max_depth=max_depth)
    if strat.uses_prm and not prm:
        con.print(f"[red]error:[/] strategy {strat.method!r} needs a PRM: pass --prm calc or --prm judge:{policy}")
        raise typer.Exit(2)
    from ttsopt.data import load_problems
    from ttsopt.search.registry import ENGINES, load_policy, load_prm, on_engine
    from ttsopt.search.run import run_search
    from ttsopt.search.methods import derive_seed

    if engine not in ENGINES:
        con.print(f"[red]error:[/] --engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        raise typer.Exit(2)
    policy, prm = on_engine(policy, engine), (on_engine(prm, engine) if prm else prm)

    kwargs = {"per_level": per_level} if per_level else {}
    try:
        probs = load_problems(problems, limit=limit, seed=seed, **kwargs)
    except (ValueError, FileNotFoundError, TypeError) as e:
        con.print(f"[red]error:[/] {e}")
        raise typer.Exit(2)
    done_ids: set[str] = set()
    if resume and out.exists():
        done_ids = {r["problem_id"] for r in _read_jsonl(out) if r.get("strategy") == strat.key}
    todo = [p for p in probs if p.id not in done_ids]
    con.print(f"{len(probs)} problems from {problems} ({len(done_ids)} already done), strategy {strat.key}")
    with con.status(f"loading policy {policy} ..."):
        pol = load_policy(policy, device=device) if _is_local(policy) else load_policy(policy)
        reward = None
        if prm and strat.uses_prm:
            reward = load_prm(prm, device=device)
    out.parent.mkdir(parents=True, exist_ok=True)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=con) as bar, out.open("a") as fh:
        task = bar.add_task(strat.key, total=len(todo))
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            # each batch draws from its own stream: a resumed run reproduces the same batches
            results = run_search(chunk, strat, pol, reward, seed=derive_seed(seed, "cli", chunk[0].id),
                                 temperature=temperature, max_tokens=max_tokens, problem_batch_size=len(chunk))
            for prob, res in zip(chunk, results):
                row = res.to_dict()
                row.update(policy=policy, prm=prm if strat.uses_prm else None, seed=seed, level=prob.level,
                           gold=prob.answer, source=prob.source)
                fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            bar.advance(task, len(chunk))
    wall = time.perf_counter() - t0
    rows = [r for r in _read_jsonl(out) if r.get("strategy") == strat.key and r["problem_id"] in {p.id for p in probs}]
    _print_summary(con, rows, strat.key, wall, out)


def _strategy_or_exit(con, method: str, **kw):
    from ttsopt.search import Strategy

    try:
        return Strategy(method, **kw)
    except ValueError as e:
        con.print(f"[red]error:[/] {e}")
        raise typer.Exit(2)


def _is_local(spec: str) -> bool:
    return not (spec.startswith("openai:") or spec.startswith("vllm:"))


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open() as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn last line from a killed run; the problem is simply redone
    return rows


def _print_summary(con, rows: list[dict], key: str, wall: float, out: Path) -> None:
    from collections import defaultdict

    from rich.table import Table

    by_level: dict = defaultdict(list)
    for r in rows:
        by_level[r.get("level")].append(r)
    table = Table(title=f"{key}: {len(rows)} problems")
    for col in ("level", "problems", "accuracy", "policy tokens", "PRM tokens", "FLOPs"):
        table.add_column(col, justify="right")

    def line(label, rs):
        acc = sum(bool(r["correct"]) for r in rs) / max(len(rs), 1)
        pt = sum(r["compute"]["policy_prompt_tokens"] + r["compute"]["policy_generated_tokens"] for r in rs)
        prm_t = sum(r["compute"]["prm_tokens"] for r in rs)
        fl = sum(r["compute"]["flops"] for r in rs)
        table.add_row(str(label), str(len(rs)), f"{acc:.3f}", f"{pt:,}", f"{prm_t:,}", f"{fl:.3g}")

    for level in sorted(by_level, key=lambda x: (x is None, str(x))):
        line(level, by_level[level])
    line("all", rows)
    con.print(table)
    gen = sum(r["compute"]["policy_generated_tokens"] for r in rows)
    con.print(f"wall time {wall:.1f} s this run; generated {gen:,} tokens in all; results in {out}")


class _Bars:
    """Adapter from the sweep's progress protocol to rich bars (one per pair and strategy)."""

    def __init__(self, progress):
        self.progress, self.tasks = progress, {}

    def start(self, name: str, total: int, done: int = 0) -> None:
        self.tasks[name] = self.progress.add_task(name, total=total, completed=done)

    def advance(self, name: str, k: int) -> None:
        self.progress.advance(self.tasks[name], k)

    def update(self, name: str, completed: int) -> None:  # other drivers of the store count too
        self.progress.update(self.tasks[name], completed=completed)


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="sweep config (.yaml or .toml), or a preset name: arith-quickstart, arith-embedded, arith-router, arith-smoke, math500-gpu, ..."),
    store: Optional[Path] = typer.Option(None, help="outcome store (SQLite); default runs/<name>/outcomes.sqlite"),
    executor: str = typer.Option("local", help="local | ray (one model-holding actor per GPU)"),
    num_gpus: float = typer.Option(0, help="ray: GPUs per actor (0 on CPU)"),
    actors: int = typer.Option(1, help="ray: actors per policy"),
    limit: Optional[int] = typer.Option(None, help="first K problems only (a quick look)"),
    embeddings: bool = typer.Option(True, help="also embed the problems with MiniLM into features.parquet"),
    engine: Optional[str] = typer.Option(None, help="override the config's engine: transformers or llamacpp"),
    pairs: Optional[str] = typer.Option(None, help="only these of the config's pairs (comma-separated names); "
                                        "the rows are the same as in the full sweep, so processes or machines "
                                        "can split a sweep by pair into one store"),
    chunks: Optional[str] = typer.Option(None, help="only these chunks of chunk_size problems, 0-based "
                                         "(e.g. 5-9 or 0,2): split one pair's work between drivers on one store"),
    from_snapshot: Optional[Path] = typer.Option(None, "--from", help="first load the units of this committed "
                                                 "snapshot folder into the store (resume on another machine)"),
    snapshot: Optional[Path] = typer.Option(None, help="export the store as a snapshot folder at the end "
                                            "(new units only; see `ttsopt snapshot`)"),
    threads: Optional[int] = typer.Option(None, min=1, help="compute threads of this driver's engine "
                                          "(TTSOPT_NUM_THREADS; default all CPUs): N drivers on N cores want 1"),
) -> None:
    """Run every strategy over every budget for each (policy, PRM) pair into a crash-safe, resumable store."""
    if threads is not None:  # read by the engines when they load, below
        os.environ["TTSOPT_NUM_THREADS"] = str(threads)
    from ttsopt.data import load_problems
    from ttsopt.train.sweep.config import SweepConfigError, load_config
    from ttsopt.train.sweep.presets import preset_config_path
    from ttsopt.train.sweep.tables import method_budget_matrix
    from ttsopt.train.sweep.store import OutcomeStore
    from ttsopt.train.sweep.driver import run_sweep, write_problem_features
    from ttsopt.train.sweep.units import check_chunks, order_problems
    from ttsopt.train.sweep.units import chunks as chunks_of

    con = _console()
    try:
        cfg = load_config(preset_config_path(str(config)) if not config.exists() else config)
    except (SweepConfigError, FileNotFoundError) as e:
        con.print(f"[red]error:[/] {e}")
        raise typer.Exit(2)
    store_path = store or Path("runs") / cfg.name / "outcomes.sqlite"
    if engine is not None:
        from ttsopt.search.registry import ENGINES

        if engine not in ENGINES:
            con.print(f"[red]error:[/] --engine must be one of {', '.join(ENGINES)}, got {engine!r}")
            raise typer.Exit(2)
        cfg.engine = engine
    only_pairs = None
    if pairs:
        only_pairs = [p.strip() for p in pairs.split(",") if p.strip()]
        known = [p.name for p in cfg.pairs]
        unknown = [w for w in only_pairs if w not in known]
        if unknown:
            con.print(f"[red]error:[/] --pairs {', '.join(unknown)} not in {cfg.name}; its pairs: {', '.join(known)}")
            raise typer.Exit(2)
    only_chunks = None
    if chunks:
        try:
            only_chunks = _parse_indices(chunks)
        except ValueError:
            con.print(f"[red]error:[/] --chunks {chunks!r}: expected indices and ranges like 5-9 or 0,2,4")
            raise typer.Exit(2)
    if limit is not None and limit % cfg.chunk_size:
        # a shorter last chunk would be marked done and never grow to its full size later
        con.print(f"[red]error:[/] --limit must be a multiple of chunk_size ({cfg.chunk_size}), got {limit}")
        raise typer.Exit(2)
    # Ordered first, then cut: `--limit K` is the first K problems the full sweep would run.
    problems = order_problems(load_problems(cfg.problems, **cfg.problem_options), cfg.order)[:limit]
    if only_chunks is not None:
        try:
            check_chunks(only_chunks, len(chunks_of(problems, cfg.chunk_size)))
        except ValueError as e:
            con.print(f"[red]error:[/] --chunks: {e}")
            raise typer.Exit(2)
    con.print(f"sweep {cfg.name} on {cfg.engine}: {len(problems)} problems, {len(cfg.pairs)} pairs, budgets {cfg.budgets} -> {store_path}")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ttsopt.train.sweep.snapshot import export_snapshot, import_snapshot
    from ttsopt.train.sweep.store import StoreMismatchError

    t0 = time.perf_counter()
    try:
        opened = OutcomeStore(store_path)
    except StoreMismatchError as e:
        con.print(f"[red]error:[/] {e}")
        raise typer.Exit(2)
    with opened as db:
        if from_snapshot is not None:
            try:
                n = import_snapshot(from_snapshot, db, fingerprint=cfg.fingerprint())
            except (StoreMismatchError, FileNotFoundError) as e:
                con.print(f"[red]error:[/] {e}")
                raise typer.Exit(2)
            con.print(f"{n} units loaded from the snapshot {from_snapshot}")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=con) as bar:
            try:
                counts = run_sweep(cfg, db, problems, executor=executor, progress=_Bars(bar),
                                   ray_options={"num_gpus": num_gpus, "actors": actors}, only_chunks=only_chunks,
                                   only_pairs=only_pairs)
            except StoreMismatchError as e:
                bar.stop()
                con.print(f"[red]error:[/] {e}")
                raise typer.Exit(2)
        df = db.outcomes()
        parquet = db.export_parquet(store_path.with_suffix(".parquet"))
        with con.status("problem features ..."):
            features = write_problem_features(problems, store_path.parent, embeddings=embeddings)
        if snapshot is not None:
            manifest = export_snapshot(db, snapshot, name=cfg.name, features=features)
            con.print(f"snapshot {snapshot}: {len(manifest['shards'])} shards, {manifest['counts']}")
    dropped = f", {counts['dropped']} computed twice (another driver committed them first)" if counts.get("dropped") else ""
    con.print(f"{counts['done']} units run, {counts['skipped']} already in the store or another driver's{dropped}; "
              f"{time.perf_counter() - t0:.1f} s")
    if counts.get("cot_rows"):
        con.print(f"{counts['cot_rows']} chunks' CoT rows copied to pairs that lacked them (units cot_rows|...)")
    for pair in cfg.pairs:
        if only_pairs is not None and pair.name not in only_pairs:
            continue
        table = method_budget_matrix(df, policy=pair.policy, prm=pair.prm)
        if not table.empty:
            con.print(f"\n[bold]{pair.policy} + {pair.prm}[/]: accuracy by method x budget x difficulty")
            con.print(table.round(3).to_string())
    con.print(f"\noutcomes: {store_path} (SQLite) and {parquet} (Parquet); problem features: {features}")


def _parse_indices(text: str) -> list[int]:
    """'5-9' or '0,2,4' or '0-2,7' -> sorted indices; ValueError on anything else."""
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        first, last = int(lo), int(hi) if sep else int(lo)
        if first < 0 or last < first:
            raise ValueError(part)
        out.update(range(first, last + 1))
    if not out:
        raise ValueError(text)
    return sorted(out)


@app.command()
def snapshot(
    store: Path = typer.Argument(..., help="outcome store (SQLite) of a sweep"),
    out: Path = typer.Option(..., help="snapshot folder (created, or extended with a new shard)"),
) -> None:
    """Export a store's units committed since the last export as Parquet files a sweep resumes from
    (`ttsopt sweep CONFIG --from OUT`); safe while drivers write the store."""
    from ttsopt.train.sweep.snapshot import export_snapshot
    from ttsopt.train.sweep.store import OutcomeStore, StoreMismatchError

    con = _console()
    if not store.is_file():
        con.print(f"[red]error:[/] no store at {store}")
        raise typer.Exit(2)
    try:
        features = store.parent / "features.parquet"  # written next to the store by `ttsopt sweep`
        with OutcomeStore(store) as db:
            manifest = export_snapshot(db, out, name=store.parent.name,
                                       features=features if features.is_file() else None)
    except StoreMismatchError as e:
        con.print(f"[red]error:[/] {e}")
        raise typer.Exit(2)
    con.print(f"{out}: {len(manifest['shards'])} shards; rows {manifest['counts']}")


@app.command("prm-eval")
def prm_eval(
    prm: str = typer.Option(..., help="PRM spec: calc, judge:smollm2-135m, math-shepherd:PATH, ..."),
    data: Path = typer.Option(..., help="ProcessBench JSON file (e.g. processbench_gsm8k.json)"),
    limit: Optional[int] = typer.Option(None, help="K examples: a seeded sample, half correct and half erroneous"),
    threshold: float = typer.Option(0.5, help="a step scoring below this is predicted wrong"),
    device: str = typer.Option("cpu"),
    out: Optional[Path] = typer.Option(None, help="write per-example predictions as JSON"),
) -> None:
    """ProcessBench: F1 of a PRM at finding the first wrong step (harmonic mean of error and correct accuracy)."""
    from ttsopt.search.prm.processbench import evaluate_prm, load_processbench
    from ttsopt.search.registry import load_prm

    con = _console()
    examples = load_processbench(data, limit=limit)
    with con.status(f"loading {prm} ..."):
        reward = load_prm(prm, device=device)
    from rich.progress import Progress

    with Progress(console=con) as bar:
        task = bar.add_task(f"scoring {len(examples)} solutions", total=len(examples))
        res = evaluate_prm(reward, examples, threshold=threshold,
                           progress=lambda done, total: bar.update(task, completed=done))
    con.print(
        f"{prm} on {data.name} (n={len(examples)}, threshold {threshold}): F1 {res.f1:.3f}  "
        f"error-acc {res.accuracy_erroneous:.3f} (n={res.n_erroneous})  "
        f"correct-acc {res.accuracy_correct:.3f} (n={res.n_correct})"
    )
    if res.auc is not None:
        con.print(f"step AUC (steps before the first error vs the first wrong step): {res.auc:.3f}")
    if out:
        from dataclasses import asdict

        out.write_text(json.dumps(asdict(res), indent=1, default=str))


def main() -> None:  # pragma: no cover
    app()



def _settings(trials: int, timeout: Optional[float], folds: int, seed: int, components: int,
              probe_k: Optional[int], tune_metric: str = "cross_entropy"):
    from ttsopt.train.fit.tuning import TrainSettings

    return TrainSettings(trials=trials, timeout_s=timeout, folds=folds, seed=seed, n_components=components,
                         probe_k=probe_k, tune_metric=tune_metric)


def _check_snapshots(con, data: list[Path]) -> None:
    missing = [str(d) for d in data if not (d / "snapshot.json").is_file()]
    if missing:
        con.print(f"[red]error:[/] not sweep snapshot folders (no snapshot.json): {', '.join(missing)}")
        raise typer.Exit(2)


@app.command()
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
) -> None:
    """Tune (Optuna, TPE, grouped CV) and fit the LightGBM selector; write the router artifact."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ttsopt.train.fit.build import train_router

    con = _console()
    _check_snapshots(con, data)
    try:
        settings = _settings(trials, timeout, folds, seed, components, probe_k, tune_metric)
    except ValueError as e:
        con.print(f"[red]error:[/] {e}")
        raise typer.Exit(2)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=con) as bar:
        task = bar.add_task("Optuna trials", total=trials)
        manifest = train_router(data, out, settings,
                                storage=study, progress=lambda done, total: bar.update(task, completed=done),
                                gate_models=gate_models, device=device)
    m = manifest["metrics"]
    metric = manifest["settings"].get("tune_metric", "cross_entropy")
    con.print(f"router {out}: {m['rows']} rows, {len(manifest['catalogue'])} pairs, cv {metric.replace('_', '-')} "
              f"{m[f'cv_{metric}']:.4f}, {m['trials_in_study']} trials in the study, {m['train_seconds']:.1f} s")


@app.command()
def evaluate(
    router: Path = typer.Option(..., help="router directory from `ttsopt train`"),
    data: list[Path] = typer.Option(..., help="snapshot folder(s) to evaluate on"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the full evaluation as JSON"),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="write the tables as markdown"),
    trials: Optional[int] = typer.Option(None, help="Optuna trials per fold (default: the router's)"),
    probe_k: list[int] = typer.Option([], "--probe-k", help="also evaluate a router with probe features of k "
                                      "samples (repeatable; snapshots without probes are skipped)"),
    plot_out: Optional[Path] = typer.Option(None, "--plot", help="write the accuracy-against-compute figure as PNG "
                                            "(cross-fitted evaluations: the curves need refits)"),
) -> None:
    """Cross-fitted evaluation on the router's own data (refit and re-tuned per fold, grouped by question)."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ttsopt.data.files import atomic_write_text
    from ttsopt.selector.artifact import ArtifactError, load_artifact
    from ttsopt.train.evaluation.evaluate import evaluate as run_evaluation
    from ttsopt.train.evaluation.evaluate import markdown
    from ttsopt.train.fit.table import load_training_table
    from ttsopt.train.fit.tuning import TrainSettings

    con = _console()
    _check_snapshots(con, data)
    try:
        artifact = load_artifact(router)
    except ArtifactError as e:
        con.print(f"[red]error:[/] {e}")
        raise typer.Exit(2)
    settings = TrainSettings(**artifact.manifest["settings"])
    if trials is not None:
        settings.trials = trials
    table = load_training_table(data, probe_k=settings.probe_k)
    if "question_keys" not in artifact.manifest["training_data"]:
        con.print(f"[red]error:[/] {router} does not list its training questions, so seen and unseen data cannot "
                  "be told apart: retrain it with `ttsopt train`")
        raise typer.Exit(2)
    trained = set(artifact.manifest["training_data"]["question_keys"])
    overlap = set(table["question_key"]) & trained
    if overlap and overlap != set(table["question_key"]):
        con.print(f"[red]error:[/] {len(overlap)} of these {table['question_key'].nunique()} questions were in the "
                  "router's training data and the rest were not: evaluate seen data (cross-fitted) and unseen data "
                  "(as is) separately")
        raise typer.Exit(2)
    if overlap:
        con.print("evaluating by cross-fitting: this is the router's training data (refit and re-tuned per fold)")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=con) as bar:
            from ttsopt.train.evaluation.evaluate import load_probe_tables

            probes, _missing = load_probe_tables(data, probe_k)
            task = bar.add_task("fits (tuned inside each)", total=settings.folds)
            from ttsopt.train.fit.cascade import load_gates
            from ttsopt.train.fit.rest import load_rest

            report = run_evaluation(table, settings, probe_tables=probes, gates=load_gates(data), rest=load_rest(data),
                                    progress=lambda d, t: bar.update(task, completed=d, total=t))
    else:
        from ttsopt.train.evaluation.evaluate import evaluate_as_is

        con.print("evaluating the saved router as it is: this is not its training data")
        try:
            from ttsopt.train.fit.cascade import load_gates
            from ttsopt.train.fit.rest import load_rest

            report = evaluate_as_is(artifact, table, gates=load_gates(data), rest=load_rest(data))
        except ValueError as e:
            con.print(f"[red]error:[/] {e}")
            raise typer.Exit(2)
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


# --------------------------------------------------------------------------- online: route, solve, serve

def _online(solve: bool, question: Optional[str], router: Path, budget: Optional[int], tokens: Optional[float],
            flops: Optional[float], target: Optional[float], pair: Optional[str], engine: Optional[str], device: str,
            policy: Optional[str], prm: Optional[str], file: Optional[Path], out: Optional[Path], batch: int,
            resume: bool, as_json: bool, seed: int, trust_models: bool = False, cascade: Optional[str] = None) -> None:
    """What `route` and `solve` share: the budget, the router, one question or a file of them."""
    from ttsopt.selector.route_io import (QuestionFileError, decision_summary, decision_table, read_questions,
                                          run_file, todo_rows)
    from ttsopt.selector.router import Budget, Router, RouterError

    con = _console()

    def fail(msg: str) -> None:
        con.print(f"[red]error:[/] {msg}")
        raise typer.Exit(2)

    if (question is None) == (file is None):
        fail("give one question, or --file FILE.jsonl (not both)")
    if cascade and not solve:
        fail("--cascade runs the CoT and its check before it chooses: use `ttsopt solve --cascade`")
    cascade_mode: bool | str = True if cascade == "true" else (cascade or False)
    if file is not None and out is None:
        fail("--file needs --out (the decisions' JSONL file)")
    try:
        bound = Budget(n=budget, tokens=tokens, flops=flops, target_accuracy=target)
    except ValueError as e:
        fail(f"{e} (--budget N generations, --tokens, --flops or --target ACCURACY)")
    rows = None
    if file is not None:
        try:
            rows = todo_rows(read_questions(file), out, resume)
        except QuestionFileError as e:
            fail(str(e))
    try:
        r = Router.load(router, pair=pair, engine=engine, device=device, policy_spec=policy, prm_spec=prm, seed=seed,
                        check_models=not trust_models)
        if rows is None:
            r.warm(models=solve)  # so that the decision's time shown is a decision's, not the models' loading
            if solve:
                solution = r.solve(question, bound, cascade=cascade_mode)
                decision = solution.decision
            else:
                decision = r.route(question, bound)
        elif rows:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=con) as bar:
                task = bar.add_task("solving" if solve else "routing", total=len(rows))
                run_file(r, rows, out, bound, solve=solve, batch=batch, progress=lambda k: bar.advance(task, k),
                         cascade=cascade_mode)
    except RouterError as e:
        fail(str(e))
    if rows is not None:
        con.print(f"{len(rows)} question(s) {'solved' if solve else 'routed'} by {r.name} ({r.pair}): {out}")
        return
    if as_json:
        print(json.dumps((solution if solve else decision).to_dict(), default=str))
        return
    from rich.console import Console

    stdout = Console()
    if not stdout.is_terminal:
        stdout = Console(width=120)  # piped: wide enough for the longest strategy key
    stdout.print(decision_table(decision, title=f"router {r.name}: {question[:70]}"))
    stdout.print(decision_summary(decision))
    if solve:
        c = solution.compute
        stdout.print(f"[bold]answer: {solution.answer}[/]  (spent {c['tokens']:,} tokens, {c['flops']:.3g} FLOPs "
                     f"with the probe; {solution.seconds:.2f} s)")


_ONLINE_HELP = {
    "question": "the question (or --file)",
    "router": "router directory from `ttsopt train`",
    "budget": "N: generations (strategies with N <= this)",
    "tokens": "expected tokens per question, the probe included",
    "flops": "expected FLOPs per question, the probe included",
    "target": "target accuracy: the cheapest strategy predicted to reach it",
    "pair": "the router's pair (needed when it has several)",
    "engine": "transformers | llamacpp (default: the engine the sweep ran)",
    "policy": "run the pair's policy from this spec instead (openai:URL#MODEL, vllm:MODEL); it must be the model "
              "the router was trained for",
    "prm": "run the pair's PRM from this spec instead",
    "file": "JSONL with one {\"question\": ..., \"id\": ...} per line",
    "out": "JSONL output, appended batch by batch",
}


def _online_command(solve: bool, batch_default: int, batch_help: str, json_help: str, doc: str):
    """Build `route` or `solve`: one option list, with the batch default and the help texts that differ."""

    def command(
        question: Optional[str] = typer.Argument(None, help=_ONLINE_HELP["question"]),
        router: Path = typer.Option(..., help=_ONLINE_HELP["router"]),
        budget: Optional[int] = typer.Option(None, help=_ONLINE_HELP["budget"]),
        tokens: Optional[float] = typer.Option(None, help=_ONLINE_HELP["tokens"]),
        flops: Optional[float] = typer.Option(None, help=_ONLINE_HELP["flops"]),
        target: Optional[float] = typer.Option(None, help=_ONLINE_HELP["target"]),
        pair: Optional[str] = typer.Option(None, help=_ONLINE_HELP["pair"]),
        engine: Optional[str] = typer.Option(None, help=_ONLINE_HELP["engine"]),
        device: str = typer.Option("cpu", help="torch device for local models and the encoder"),
        policy: Optional[str] = typer.Option(None, help=_ONLINE_HELP["policy"]),
        prm: Optional[str] = typer.Option(None, help=_ONLINE_HELP["prm"]),
        file: Optional[Path] = typer.Option(None, help=_ONLINE_HELP["file"]),
        out: Optional[Path] = typer.Option(None, help=_ONLINE_HELP["out"]),
        batch: int = typer.Option(batch_default, help=batch_help),
        resume: bool = typer.Option(False, help="skip questions already in --out"),
        as_json: bool = typer.Option(False, "--json", help=json_help),
        seed: int = typer.Option(0, help="seed of the probe and search calls"),
        trust_models: bool = typer.Option(False, help="run --policy/--prm even if their name or size is not the "
                                          "trained models' (you vouch they are the same weights)"),
        cascade: Optional[str] = typer.Option(None, help="solve only: verify first (the greedy CoT, checked by the "
                                              "PRM); where the check fails, `level` runs the search fitted for the "
                                              "level predicted from the question's text, `binned` the one for its "
                                              "bin of predicted CoT accuracy, `fitted` the one fitted for N, "
                                              "`router` routes within the N - 1 left; `true` is the router's default "
                                              "of these; needs --budget N"),
    ) -> None:
        _online(solve, question, router, budget, tokens, flops, target, pair, engine, device, policy, prm, file, out,
                batch, resume, as_json, seed, trust_models, cascade)

    command.__name__ = command.__qualname__ = "solve" if solve else "route"
    command.__doc__ = doc
    return command


route = app.command("route")(_online_command(
    False, 16, "questions per batch (one encoder / probe call each)",
    "print the decision as JSON instead of the table",
    "Which strategy the router picks for a question under a budget, with every strategy's prediction."))
solve = app.command("solve")(_online_command(
    True, 8, "questions per batch (strategies that coincide run as one search call)",
    "print the solution as JSON instead of the table",
    "Route, then run the chosen search with the pair's policy and PRM: the answer, the decision, the compute."))


@app.command()
def serve(
    router: Path = typer.Option(..., help=_ONLINE_HELP["router"] + "; its folder name is the OpenAI model id"),
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback by default; use an API key past it)"),
    port: int = typer.Option(8000, help="port to bind"),
    api_key: Optional[str] = typer.Option(None, envvar="TTSOPT_API_KEY", show_envvar=True,
                                          help="demand 'Authorization: Bearer KEY' on every route but /healthz"),
    batch_window_ms: float = typer.Option(10.0, help="merge requests arriving within this window into one router "
                                                     "call (0: one request at a time)"),
    max_batch: int = typer.Option(64, help="questions in one router call"),
    max_queue: int = typer.Option(1024, help="questions waiting for the models before requests get 503"),
    max_questions: int = typer.Option(64, help="questions in one /v1/route or /v1/solve call"),
    max_question_chars: int = typer.Option(8000, help="characters in one question"),
    max_body_bytes: int = typer.Option(1024 * 1024, help="bytes in one request body"),
    max_budget: int = typer.Option(256, help="the largest budget N a request may ask for"),
    max_budget_tokens: float = typer.Option(1e6, help="the largest token budget a request may ask for"),
    max_budget_flops: float = typer.Option(1e15, help="the largest FLOPs budget a request may ask for"),
    default_budget: int = typer.Option(16, help="budget N of a request that names none (0: a request must name one)"),
    pair: Optional[str] = typer.Option(None, help=_ONLINE_HELP["pair"]),
    engine: Optional[str] = typer.Option(None, help=_ONLINE_HELP["engine"]),
    device: str = typer.Option("cpu", help="torch device for local models and the encoder"),
    policy: Optional[str] = typer.Option(None, help=_ONLINE_HELP["policy"]),
    prm: Optional[str] = typer.Option(None, help=_ONLINE_HELP["prm"]),
    seed: int = typer.Option(0, help="seed of the probe and search calls"),
    warmup: bool = typer.Option(True, help="solve one question before listening, so the models load at start-up"),
) -> None:
    """Serve the router over HTTP: OpenAI-compatible /v1/chat/completions, /v1/route, /v1/solve, /metrics."""
    from ttsopt.selector.router import Budget, Router, RouterError
    from ttsopt.serve.app import run_server
    from ttsopt.serve.settings import ServeSettings

    con = _console()
    try:
        settings = ServeSettings(host=host, port=port, api_key=api_key, batch_window_ms=batch_window_ms,
                                 max_batch=max_batch, max_queue=max_queue, max_questions=max_questions,
                                 max_question_chars=max_question_chars, max_body_bytes=max_body_bytes,
                                 max_budget_n=max_budget, max_budget_tokens=max_budget_tokens,
                                 max_budget_flops=max_budget_flops, default_budget_n=default_budget or None)
    except ValueError as e:
        con.print(f"[red]error:[/] {e}")
        raise typer.Exit(2)
    try:
        r = Router.load(router, pair=pair, engine=engine, device=device, policy_spec=policy, prm_spec=prm, seed=seed)
        if warmup:
            started = time.perf_counter()
            r.solve("What is 1 + 1?", Budget(n=1))
            con.print(f"models loaded and warm ({time.perf_counter() - started:.1f} s)")
    except RouterError as e:
        con.print(f"[red]error:[/] {e}")
        raise typer.Exit(2)
    auth = "API key required" if settings.api_key else "no API key"
    con.print(f"serving router [bold]{r.name}[/] ({r.pair}) on http://{host}:{port}/v1 ({auth}; "
              f"batch window {settings.batch_window_ms:g} ms)")
    run_server(r, settings)


# --------------------------------------------------------------------------- analysis: explain, report


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


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@app.command()
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

    con = _console()
    data = data or []
    if not data and question is None:
        con.print("[red]error:[/] give --data (global importance, --problem) or --question")
        raise typer.Exit(2)
    _check_snapshots(con, data)
    try:
        result = run_explain(router, data, problem=problem, question=question, budget=budget, pair=pair, top=top)
    except (ArtifactError, ValueError) as e:
        con.print(f"[red]error:[/] {e}")
        raise typer.Exit(2)
    text = json.dumps(result, indent=1, default=str) + "\n"
    if json_out is not None and str(json_out) == "-":
        print(text, end="")
        return
    if json_out is not None:
        atomic_write_text(json_out, text)
    from rich.console import Console

    _print_explanation(Console(), result)  # the tables are the command's output: stdout


@app.command()
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

    con = _console()
    _check_snapshots(con, data)
    try:
        page = build_report(router, data, out, eval_path=eval_json, trials=trials,
                            progress=lambda msg: con.print(f"[dim]{msg}…[/]"))
    except (ArtifactError, ValueError) as e:
        con.print(f"[red]error:[/] {e}")
        raise typer.Exit(2)
    con.print(f"report: {page} ({page.stat().st_size / 1e6:.1f} MB, self-contained); figures in {page.parent / 'figures'}")
    if screenshot is not None:
        from ttsopt.train.report.html import screenshot as take

        try:
            con.print(f"screenshot: {take(page, screenshot)}")
        except (RuntimeError, OSError) as e:
            con.print(f"[yellow]no screenshot:[/] {e}")
            raise typer.Exit(1)


# --------------------------------------------------------------------------- quickstart


class _QuickstartBars:
    """The quickstart's stages as rich output: a rule per stage, bars for the sweep, trials and folds."""

    def __init__(self, con, progress):
        self.con, self.progress = con, progress

    def stage(self, name: str) -> None:
        self.con.rule(f"[bold]{name}")

    def sweep_progress(self):
        return _Bars(self.progress)

    def counter(self, name: str, total: int):
        task = self.progress.add_task(name, total=total)
        return lambda done, _total: self.progress.update(task, completed=done)


@app.command()
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ttsopt.train.quickstart import NEXT_STEPS, QuickstartSettings, run_quickstart

    con = _console()
    t0 = time.perf_counter()
    settings = QuickstartSettings(out=out, limit=limit, trials=trials, report=report)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=con) as bar:
        try:
            result = run_quickstart(settings, _QuickstartBars(con, bar))
        except (ValueError, RuntimeError) as e:
            bar.stop()
            con.print(f"[red]error:[/] {e}")
            raise typer.Exit(2)
    print(result.eval_markdown)
    spent = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    con.print(f"done in {time.perf_counter() - t0:.0f} s ({spent})"
              + (f"; already there: {', '.join(result.skipped)}" if result.skipped else ""))
    con.print(f"evaluation: {result.eval_json} (every rule: {result.out / 'eval.md'})"
              + (f"\nreport: {result.report}" if result.report else ""))
    con.print("\n[bold]next[/]")
    for what, command in NEXT_STEPS:
        con.print(f"  {what}:\n    [cyan]{command.format(router=result.router)}[/]")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
