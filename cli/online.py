"""Online: ``ttsopt route`` (which strategy for a question under a budget), ``solve`` (route, then
run it) and ``serve`` (the router over HTTP, serve/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import console, fail, progress_bar


def _online(solve: bool, question: Optional[str], router: Path, budget: Optional[int], tokens: Optional[float],
            flops: Optional[float], target: Optional[float], pair: Optional[str], engine: Optional[str], device: str,
            policy: Optional[str], prm: Optional[str], file: Optional[Path], out: Optional[Path], batch: int,
            resume: bool, as_json: bool, seed: int, trust_models: bool = False, cascade: Optional[str] = None) -> None:
    """What `route` and `solve` share: the budget, the router, one question or a file of them."""
    from ttsopt.selector.route_io import (QuestionFileError, decision_summary, decision_table, read_questions,
                                          run_file, todo_rows)
    from ttsopt.selector.records import Budget, RouterError
    from ttsopt.selector.router import Router

    con = console()
    if (question is None) == (file is None):
        fail("give one question, or --file FILE.jsonl (not both)", con)
    if cascade and not solve:
        fail("--cascade runs the CoT and its check before it chooses: use `ttsopt solve --cascade`", con)
    # no --cascade: the pair's deployed default; "false": the plain argmax; "true" or a mode: the cascade
    cascade_mode: bool | str | None = {"true": True, "false": False}.get(cascade, cascade) if cascade else None
    if file is not None and out is None:
        fail("--file needs --out (the decisions' JSONL file)", con)
    try:
        bound = Budget(n=budget, tokens=tokens, flops=flops, target_accuracy=target)
    except ValueError as e:
        fail(f"{e} (--budget N generations, --tokens, --flops or --target ACCURACY)", con)
    rows = None
    if file is not None:
        try:
            rows = todo_rows(read_questions(file), out, resume)
        except QuestionFileError as e:
            fail(str(e), con)
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
            with progress_bar(con) as bar:
                task = bar.add_task("solving" if solve else "routing", total=len(rows))
                run_file(r, rows, out, bound, solve=solve, batch=batch, progress=lambda k: bar.advance(task, k),
                         cascade=cascade_mode)
    except RouterError as e:
        fail(str(e), con)
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
        cascade: Optional[str] = typer.Option(None, help="solve only. Without it, the pair's deployed default (the mode `ttsopt train` chose by nested "
                                              "cross-fitting, shown in manifest.json's `deployed`); `false`: the LightGBM argmax. "
                                              "Otherwise verify first (the greedy CoT, checked by the "
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


route = _online_command(
    False, 16, "questions per batch (one encoder / probe call each)",
    "print the decision as JSON instead of the table",
    "Which strategy the router picks for a question under a budget, with every strategy's prediction.")
solve = _online_command(
    True, 8, "questions per batch (strategies that coincide run as one search call)",
    "print the solution as JSON instead of the table",
    "Route, then run the chosen search with the pair's policy and PRM: the answer, the decision, the compute.")


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
    from ttsopt.selector.records import RouterError
    from ttsopt.serve.app import run_server
    from ttsopt.serve.routers import load_served
    from ttsopt.serve.settings import ServeSettings

    con = console()
    try:
        settings = ServeSettings(host=host, port=port, api_key=api_key, batch_window_ms=batch_window_ms,
                                 max_batch=max_batch, max_queue=max_queue, max_questions=max_questions,
                                 max_question_chars=max_question_chars, max_body_bytes=max_body_bytes,
                                 max_budget_n=max_budget, max_budget_tokens=max_budget_tokens,
                                 max_budget_flops=max_budget_flops, default_budget_n=default_budget or None)
    except ValueError as e:
        fail(str(e), con)
    try:  # every pair of the router as its own model (router/PAIR), or only --pair
        served = load_served(router, pair=pair, engine=engine, device=device, policy_spec=policy, prm_spec=prm,
                             seed=seed, warmup=warmup)
    except RouterError as e:
        fail(str(e), con)
    if served.warm_seconds is not None:
        con.print(f"models loaded and warm ({served.warm_seconds:.1f} s)")
    auth = "API key required" if settings.api_key else "no API key"
    con.print(f"serving {served.describe()} on http://{host}:{port}/v1 ({auth}; "
              f"batch window {settings.batch_window_ms:g} ms)")
    run_server(served, settings)
