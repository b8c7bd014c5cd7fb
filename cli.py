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


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="sweep config (.yaml or .toml), or a preset name: arith-embedded, arith-smoke"),
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
) -> None:
    """Run every strategy over every budget for each (policy, PRM) pair into a crash-safe, resumable store."""
    from ttsopt.data import load_problems
    from ttsopt.train.config import SweepConfigError, load_config
    from ttsopt.train.presets import preset_config_path
    from ttsopt.train.report import method_budget_matrix
    from ttsopt.train.store import OutcomeStore
    from ttsopt.train.sweep import run_sweep, write_problem_features
    from ttsopt.train.units import check_chunks, order_problems
    from ttsopt.train.units import chunks as chunks_of

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
    if pairs:
        wanted = [p.strip() for p in pairs.split(",") if p.strip()]
        known = {p.name: p for p in cfg.pairs}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            con.print(f"[red]error:[/] --pairs {', '.join(unknown)} not in {cfg.name}; its pairs: {', '.join(known)}")
            raise typer.Exit(2)
        cfg.pairs = [known[w] for w in wanted]
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

    from ttsopt.train.snapshot import export_snapshot, import_snapshot
    from ttsopt.train.store import StoreMismatchError

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
                                   ray_options={"num_gpus": num_gpus, "actors": actors}, only_chunks=only_chunks)
            except StoreMismatchError as e:
                bar.stop()
                con.print(f"[red]error:[/] {e}")
                raise typer.Exit(2)
        df = db.outcomes()
        parquet = db.export_parquet(store_path.with_suffix(".parquet"))
        if snapshot is not None:
            manifest = export_snapshot(db, snapshot, name=cfg.name)
            con.print(f"snapshot {snapshot}: {len(manifest['shards'])} shards, {manifest['counts']}")
    with con.status("problem features ..."):
        features = write_problem_features(problems, store_path.parent, embeddings=embeddings)
    con.print(f"{counts['done']} units run, {counts['skipped']} already in the store; {time.perf_counter() - t0:.1f} s")
    for pair in cfg.pairs:
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
    from ttsopt.train.snapshot import export_snapshot
    from ttsopt.train.store import OutcomeStore, StoreMismatchError

    con = _console()
    if not store.is_file():
        con.print(f"[red]error:[/] no store at {store}")
        raise typer.Exit(2)
    try:
        with OutcomeStore(store) as db:
            manifest = export_snapshot(db, out, name=store.parent.name)
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
    from ttsopt.train.processbench import evaluate_prm, load_processbench
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
              probe_k: Optional[int]):
    from ttsopt.train.tuning import TrainSettings

    return TrainSettings(trials=trials, timeout_s=timeout, folds=folds, seed=seed, n_components=components,
                         probe_k=probe_k)


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
) -> None:
    """Tune (Optuna, TPE, grouped CV) and fit the LightGBM selector; write the router artifact."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ttsopt.train.build import train_router

    con = _console()
    _check_snapshots(con, data)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=con) as bar:
        task = bar.add_task("Optuna trials", total=trials)
        manifest = train_router(data, out, _settings(trials, timeout, folds, seed, components, probe_k),
                                storage=study, progress=lambda done, total: bar.update(task, completed=done))
    m = manifest["metrics"]
    con.print(f"router {out}: {m['rows']} rows, {len(manifest['catalogue'])} pairs, cv cross-entropy "
              f"{m['cv_cross_entropy']:.4f}, {m['trials_in_study']} trials in the study, {m['train_seconds']:.1f} s")


@app.command()
def evaluate(
    router: Path = typer.Option(..., help="router directory from `ttsopt train`"),
    data: list[Path] = typer.Option(..., help="snapshot folder(s) to evaluate on"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the full evaluation as JSON"),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="write the tables as markdown"),
    trials: Optional[int] = typer.Option(None, help="Optuna trials per fold (default: the router's)"),
) -> None:
    """Cross-fitted evaluation on the router's own data (refit and re-tuned per fold, grouped by question)."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ttsopt.data.files import atomic_write_text
    from ttsopt.selector.artifact import ArtifactError, load_artifact
    from ttsopt.train.evaluate import evaluate as run_evaluation
    from ttsopt.train.evaluate import markdown
    from ttsopt.train.table import load_training_table
    from ttsopt.train.tuning import TrainSettings

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
            task = bar.add_task("folds (tuned inside each)", total=settings.folds)
            report = run_evaluation(table, settings, progress=lambda d, t: bar.update(task, completed=d))
    else:
        from ttsopt.train.evaluate import evaluate_as_is

        con.print("evaluating the saved router as it is: this is not its training data")
        try:
            report = evaluate_as_is(artifact, table)
        except ValueError as e:
            con.print(f"[red]error:[/] {e}")
            raise typer.Exit(2)
    report["router"] = str(router)
    text = markdown(report)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(report, indent=1, default=float) + "\n")
    if markdown_out is not None:
        atomic_write_text(markdown_out, text)
    print(text)


# --------------------------------------------------------------------------- online: route, solve, serve


# --------------------------------------------------------------------------- analysis: explain, report


# --------------------------------------------------------------------------- quickstart


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
