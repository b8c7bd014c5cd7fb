"""One model at a time: ``ttsopt run`` (one strategy over a problem set), ``models``, ``prm-eval``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from .common import check_engine, console, fail, progress_bar


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
    con = console()
    con.print(table)
    con.print("PRM families: " + ", ".join(PRM_FAMILIES) + "   (e.g. --prm calc, --prm judge:smollm2-135m)")


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
    con = console()
    if pair:
        from ttsopt.search.pairs import resolve_pair

        try:
            named = resolve_pair(pair)
        except KeyError as e:
            fail(e.args[0], con)
        policy, prm = named.policy, named.prm
    if prm:
        from ttsopt.search.pairs import resolve_prm_spec

        prm = resolve_prm_spec(prm, policy)
    from ttsopt.search import Strategy

    try:
        strat = Strategy(strategy, n=n, m=m, agg=agg, vote=vote, max_depth=max_depth)
    except ValueError as e:
        fail(str(e), con)
    if strat.uses_prm and not prm:
        fail(f"strategy {strat.method!r} needs a PRM: pass --prm calc or --prm judge:{policy}", con)
    from ttsopt.data import load_problems
    from ttsopt.search.registry import load_policy, load_prm, on_engine
    from ttsopt.search.run_file import pending, results, run_to_jsonl

    check_engine(engine, con)
    policy, prm = on_engine(policy, engine), (on_engine(prm, engine) if prm else prm)

    kwargs = {"per_level": per_level} if per_level else {}
    try:
        probs = load_problems(problems, limit=limit, seed=seed, **kwargs)
    except (ValueError, FileNotFoundError, TypeError) as e:
        fail(str(e), con)
    todo, n_done = pending(probs, out, strat, resume=resume)
    con.print(f"{len(probs)} problems from {problems} ({n_done} already done), strategy {strat.key}")
    try:
        with con.status(f"loading policy {policy} ..."):
            pol = load_policy(policy, device=device) if _is_local(policy) else load_policy(policy)
            reward = None
            if prm and strat.uses_prm:
                reward = load_prm(prm, device=device)
    except ValueError as e:  # a bad spec, a server that does not say its size: one line that says how
        fail(str(e), con)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with progress_bar(con, remaining=True) as bar:
        task = bar.add_task(strat.key, total=len(todo))
        run_to_jsonl(todo, strat, pol, reward, out, policy_spec=policy, prm_spec=prm, seed=seed,
                     temperature=temperature, max_tokens=max_tokens, batch=batch,
                     progress=lambda k: bar.advance(task, k))
    wall = time.perf_counter() - t0
    _print_summary(con, results(out, strat, probs), strat.key, wall, out)


def _is_local(spec: str) -> bool:
    return not (spec.startswith("openai:") or spec.startswith("vllm:"))


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

    con = console()
    examples = load_processbench(data, limit=limit)
    try:
        with con.status(f"loading {prm} ..."):
            reward = load_prm(prm, device=device)
    except ValueError as e:
        fail(str(e), con)
    with progress_bar(con, remaining=True) as bar:
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
