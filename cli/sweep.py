"""The offline sweep: ``ttsopt sweep`` (every strategy and budget into a resumable store) and
``ttsopt snapshot`` (the store as Parquet shards a sweep resumes from)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import typer

from .common import SweepBars, check_engine, console, fail, progress_bar


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
    from ttsopt.train.sweep.config import SweepConfigError, check_pairs, load_config, pair_names
    from ttsopt.train.sweep.driver import run_sweep, write_problem_features
    from ttsopt.train.sweep.presets import preset_config_path
    from ttsopt.train.sweep.store import OutcomeStore
    from ttsopt.train.sweep.tables import method_budget_matrix
    from ttsopt.train.sweep.units import check_chunks, order_problems
    from ttsopt.train.sweep.units import chunks as chunks_of

    con = console()
    try:
        cfg = load_config(preset_config_path(str(config)) if not config.exists() else config)
    except (SweepConfigError, FileNotFoundError) as e:
        fail(str(e), con)
    store_path = store or Path("runs") / cfg.name / "outcomes.sqlite"
    if engine is not None:
        cfg.engine = check_engine(engine, con)
    only_pairs = None
    if pairs:
        try:
            only_pairs = check_pairs(cfg, pair_names(pairs), label="--pairs")
        except ValueError as e:
            fail(str(e), con)
    only_chunks = None
    if chunks:
        try:
            only_chunks = _parse_indices(chunks)
        except ValueError:
            fail(f"--chunks {chunks!r}: expected indices and ranges like 5-9 or 0,2,4", con)
    if limit is not None and limit % cfg.chunk_size:
        # a shorter last chunk would be marked done and never grow to its full size later
        fail(f"--limit must be a multiple of chunk_size ({cfg.chunk_size}), got {limit}", con)
    # Ordered first, then cut: `--limit K` is the first K problems the full sweep would run.
    problems = order_problems(load_problems(cfg.problems, **cfg.problem_options), cfg.order)[:limit]
    if only_chunks is not None:
        try:
            check_chunks(only_chunks, len(chunks_of(problems, cfg.chunk_size)))
        except ValueError as e:
            fail(f"--chunks: {e}", con)
    con.print(f"sweep {cfg.name} on {cfg.engine}: {len(problems)} problems, {len(cfg.pairs)} pairs, budgets {cfg.budgets} -> {store_path}")
    from ttsopt.train.sweep.snapshot import export_snapshot, import_snapshot
    from ttsopt.train.sweep.store import StoreMismatchError

    t0 = time.perf_counter()
    try:
        opened = OutcomeStore(store_path)
    except StoreMismatchError as e:
        fail(str(e), con)
    with opened as db:
        if from_snapshot is not None:
            try:
                n = import_snapshot(from_snapshot, db, fingerprint=cfg.fingerprint())
            except (StoreMismatchError, FileNotFoundError) as e:
                fail(str(e), con)
            con.print(f"{n} units loaded from the snapshot {from_snapshot}")
        with progress_bar(con, remaining=True) as bar:
            try:
                counts = run_sweep(cfg, db, problems, executor=executor, progress=SweepBars(bar),
                                   ray_options={"num_gpus": num_gpus, "actors": actors}, only_chunks=only_chunks,
                                   only_pairs=only_pairs)
            except StoreMismatchError as e:
                bar.stop()
                fail(str(e), con)
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


def snapshot(
    store: Path = typer.Argument(..., help="outcome store (SQLite) of a sweep"),
    out: Path = typer.Option(..., help="snapshot folder (created, or extended with a new shard)"),
) -> None:
    """Export a store's units committed since the last export as Parquet files a sweep resumes from
    (`ttsopt sweep CONFIG --from OUT`); safe while drivers write the store."""
    from ttsopt.train.sweep.snapshot import export_snapshot
    from ttsopt.train.sweep.store import OutcomeStore, StoreMismatchError

    con = console()
    if not store.is_file():
        fail(f"no store at {store}", con)
    try:
        features = store.parent / "features.parquet"  # written next to the store by `ttsopt sweep`
        with OutcomeStore(store) as db:
            manifest = export_snapshot(db, out, name=store.parent.name,
                                       features=features if features.is_file() else None)
    except StoreMismatchError as e:
        fail(str(e), con)
    con.print(f"{out}: {len(manifest['shards'])} shards; rows {manifest['counts']}")
