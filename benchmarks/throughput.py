"""Throughput of whole searches per (engine x policy x workload): wall time, tokens, prefill, memory.

    HF_HUB_OFFLINE=1 python benchmarks/throughput.py \
        --engines transformers,llamacpp --policies smollm2-135m,gemma3-270m \
        --workloads sample:16,sample:64,beam:16,dvts:16 \
        --problems 'builtin:arith?per_level=2&seed=0' --max-tokens 160 --step-max-tokens 64 \
        --prm calc --out throughput.json

A workload is what a sweep really runs, not a decode kernel: ``sample:N`` draws N full
solutions per problem (majority voting, batched across problems), ``beam:N`` and
``dvts:N`` are step-level tree searches (beam width / subtree expansion m=4) that call
the policy once per depth and the PRM between calls, all through ``run_search``. So the
figures include prefill, padding, rows that stop early, prefix-cache reuse across steps
and the PRM; they are what an engine choice changes in practice.

Figures per configuration: wall time of the search (model load and the warm-up call
excluded, reported separately as ``load_s`` and ``warmup_s``), generated tokens and
generated tok/s, the algorithmic prompt tokens (``Generation.prompt_tokens``, each
prompt counted once, as compute budgets count it), the tokens the engine actually
prefilled (``Generation.prefill_tokens``: ``None`` when a backend does not report it)
and their ratio to generated tokens (how much prefill each generated token drags along;
a prefix cache pushes it down), the number of generate calls, PRM tokens, and peak RSS.
Every configuration runs in a fresh subprocess so that peak RSS and model caches belong
to it alone; a configuration that fails (an engine not installed, a timeout) becomes an
error row, not a crash; the exit status is non-zero only when nothing could be measured.

Figures depend on machine load as much as on the engine: on a shared CPU a neighbour's
job can halve tok/s. The load average is recorded before and after the whole run and
around each configuration's timed part, together with the machine, library versions
and the exact command line; compare runs only when those match.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ttsopt.data.files import atomic_write_text  # noqa: E402  (after the offline default)
from ttsopt.search.strategy import Strategy  # noqa: E402
from ttsopt.search.types import Generation, SamplingParams  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/machine.py: this folder is no package
from machine import loadavg  # noqa: E402

#: Beam width (beam search) and expansion per subtree (DVTS), as in the paper's settings.
TREE_WIDTH = 4
#: The child prints its result on a line starting with this, so library chatter on stdout
#: (llama.cpp, transformers) can never be mistaken for it.
RESULT_MARKER = "THROUGHPUT_RESULT "
#: Warm-up question: not one of the benchmark's problems, so it cannot pre-fill their prefixes.
WARMUP_QUESTION = "What is 2 + 2?"
#: Every row of the JSON report has these keys (``None`` where a figure does not apply or the run failed).
RESULT_KEYS = (
    "engine", "policy", "policy_spec", "workload", "strategy", "prm", "status", "error",
    "problems", "num_parameters", "load_s", "warmup_s", "wall_s", "generate_s", "calls", "prompts", "completions",
    "generated_tokens", "gen_tok_per_s", "prompt_tokens", "prefill_tokens", "prefill_per_gen",
    "prm_tokens", "accuracy", "peak_rss_mib", "peak_rss_after_load_mib", "threads",
    "loadavg_before", "loadavg_after", "child_wall_s",
)
TABLE_COLUMNS = ("engine", "policy", "workload", "wall s", "gen tok", "gen tok/s", "prefill tok",
                 "prefill/gen", "peak MiB")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far; ru_maxrss is KiB on Linux but bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


# ---------------------------------------------------------------------------------------
# Counting what the engine does
# ---------------------------------------------------------------------------------------


class CountingPolicy:
    """A policy proxy that sums what every ``generate`` call returned, then hands it on.

    The search's own ``Compute`` records only algorithmic tokens per problem; this sees
    the engine side (``prefill_tokens``) and the number of calls, which is what decides
    throughput. ``prefill_tokens`` stays ``None`` once any generation fails to report it:
    a partial sum would read as a better prefix cache than the engine has.
    """

    def __init__(self, policy: Any) -> None:
        self._inner = policy
        self.calls = 0
        self.prompts = 0
        self.completions = 0
        self.prompt_tokens = 0
        self.prefill_tokens: int | None = 0
        self.generated_tokens = 0
        self.generate_s = 0.0

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def num_parameters(self) -> int:
        return self._inner.num_parameters

    def format_prompt(self, question: str) -> str:
        return self._inner.format_prompt(question)

    def generate(self, prompts: Sequence[str], params: SamplingParams, **kwargs: Any) -> list[Generation]:
        start = time.perf_counter()
        gens = self._inner.generate(prompts, params, **kwargs)
        self.generate_s += time.perf_counter() - start
        self.calls += 1
        self.prompts += len(gens)
        for gen in gens:
            self.completions += len(gen.completions)
            self.prompt_tokens += gen.prompt_tokens
            self.generated_tokens += gen.generated_tokens
            if self.prefill_tokens is not None:
                self.prefill_tokens = None if gen.prefill_tokens is None else self.prefill_tokens + gen.prefill_tokens
        return gens

    def counts(self) -> dict[str, Any]:
        """The sums so far, under the names the report uses."""
        return {
            "calls": self.calls, "prompts": self.prompts, "completions": self.completions,
            "prompt_tokens": self.prompt_tokens, "prefill_tokens": self.prefill_tokens,
            "generated_tokens": self.generated_tokens, "generate_s": round(self.generate_s, 3),
        }

    def __getattr__(self, attr: str) -> Any:
        # Only reached for attributes not defined here (batch_size, encode_prompt, reset_cache...).
        if attr == "_inner":  # not set yet (copy/pickle): do not recurse
            raise AttributeError(attr)
        return getattr(self._inner, attr)


# ---------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------


def parse_workload(workload: str, max_depth: int) -> Strategy:
    """``sample:N`` -> majority over N samples; ``beam:N`` / ``dvts:N`` -> tree search with m=4."""
    kind, _, n_text = workload.partition(":")
    try:
        n = int(n_text)
    except ValueError:
        raise ValueError(f"workload {workload!r} must look like sample:N, beam:N or dvts:N") from None
    if kind == "sample":
        return Strategy("majority", n=n)
    if kind in ("beam", "dvts"):
        return Strategy(kind, n=n, m=TREE_WIDTH, agg="last", vote="prm_vote", max_depth=max_depth)
    raise ValueError(f"unknown workload kind {kind!r} in {workload!r}; expected sample, beam or dvts")


@dataclass(frozen=True)
class Config:
    """One configuration, as the parent hands it to a child process (JSON on its command line)."""

    engine: str
    policy: str
    workload: str
    problems: str
    max_tokens: int
    step_max_tokens: int
    prm: str
    max_depth: int
    temperature: float = 0.7
    seed: int = 0
    warmup: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Config":
        data = json.loads(text)
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    """Every ``RESULT_KEYS`` key, in that order (missing ones ``None``), then any extra keys."""
    out = {key: row.get(key) for key in RESULT_KEYS}
    out.update({k: v for k, v in row.items() if k not in out})
    return out


def error_row(config: Config, error: str, **extra: Any) -> dict[str, Any]:
    """A failed configuration keeps its identity and every key, so tables and readers need no special case."""
    return normalise_row({
        "engine": config.engine, "policy": config.policy, "workload": config.workload,
        "prm": config.prm, "status": "error", "error": error, **extra,
    })


def run_config(config: Config) -> dict[str, Any]:
    """Load, warm up, time one search and return its row; runs inside the child process."""
    from ttsopt.data import load_problems
    from ttsopt.search.registry import load_policy, load_prm, on_engine
    from ttsopt.search.run import run_search

    strategy = parse_workload(config.workload, config.max_depth)
    problems = load_problems(config.problems)
    policy_spec = on_engine(config.policy, config.engine)
    prm_spec = on_engine(config.prm, config.engine) if strategy.uses_prm else None

    t0 = time.perf_counter()
    policy = load_policy(policy_spec)
    prm = load_prm(prm_spec) if prm_spec else None
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if config.warmup:
        policy.generate([policy.format_prompt(WARMUP_QUESTION)], SamplingParams(n=1, max_tokens=4, seed=0))
        if hasattr(policy, "reset_cache"):
            policy.reset_cache()  # the timed search starts with a cold prefix cache, as a fresh run would
    warmup_s = time.perf_counter() - t0 if config.warmup else None
    rss_after_load = peak_rss_mib()  # weights + warm-up: what the search itself adds is the rest

    counting = CountingPolicy(policy)
    load_before = loadavg()
    t0 = time.perf_counter()
    results = run_search(
        problems, strategy, counting, prm, seed=config.seed, temperature=config.temperature,
        max_tokens=config.max_tokens, step_max_tokens=config.step_max_tokens,
    )
    wall = time.perf_counter() - t0
    load_after = loadavg()

    counts = counting.counts()
    generated = counts["generated_tokens"]
    prefill = counts["prefill_tokens"]
    return normalise_row({
        "engine": config.engine, "policy": config.policy, "policy_spec": policy_spec,
        "workload": config.workload, "strategy": strategy.key, "prm": prm_spec, "status": "ok",
        "problems": len(problems), "num_parameters": policy.num_parameters,
        "load_s": round(load_s, 2), "warmup_s": None if warmup_s is None else round(warmup_s, 2),
        "wall_s": round(wall, 3), **counts,
        "gen_tok_per_s": round(generated / wall, 2) if wall > 0 else None,
        "prefill_per_gen": round(prefill / generated, 3) if prefill is not None and generated else None,
        "prm_tokens": sum(r.compute.prm_tokens for r in results) if strategy.uses_prm else None,
        "accuracy": round(sum(bool(r.correct) for r in results) / len(results), 3) if results else None,
        "peak_rss_mib": peak_rss_mib(), "peak_rss_after_load_mib": rss_after_load,
        "threads": _threads(config.engine),
        "loadavg_before": load_before, "loadavg_after": load_after,
        "warmup": config.warmup, "max_tokens": config.max_tokens, "step_max_tokens": config.step_max_tokens,
    })


def _threads(engine: str) -> int | None:
    """Threads the engine computes with: torch's for transformers, TTSOPT_NUM_THREADS or all CPUs for llama.cpp."""
    if engine == "transformers":
        import torch

        return torch.get_num_threads()
    return int(os.environ.get("TTSOPT_NUM_THREADS") or 0) or os.cpu_count()


def child_main(config_json: str) -> int:
    """Entry point of a child: exactly one marked JSON line on stdout, success or not."""
    config = Config.from_json(config_json)
    try:
        row = run_config(config)
        code = 0
    except Exception as e:  # reported as an error row by the parent
        row = error_row(config, f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
        code = 1
    row["peak_rss_mib"] = row.get("peak_rss_mib") or peak_rss_mib()
    print(RESULT_MARKER + json.dumps(row), flush=True)
    return code


def run_in_child(config: Config, *, threads: int | None, timeout: float | None) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter and return its row (an error row on any failure)."""
    env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"),
               TOKENIZERS_PARALLELISM=os.environ.get("TOKENIZERS_PARALLELISM", "false"))
    if threads is not None:
        env["TTSOPT_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", config.to_json()]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return error_row(config, f"timed out after {timeout:g} s", child_wall_s=round(time.perf_counter() - t0, 2))
    child_wall = round(time.perf_counter() - t0, 2)
    marked = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if not marked:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        return error_row(config, f"child exited with {proc.returncode} and no result: {tail}", child_wall_s=child_wall)
    row = json.loads(marked[-1][len(RESULT_MARKER):])
    row["child_wall_s"] = child_wall
    return normalise_row(row)


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What the figures were measured on; read from package metadata so the parent imports no engine."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = None
    try:
        mem_mib: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        mem_mib = None
    return {
        "platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(), "usable_cpus": usable, "memory_mib": mem_mib,
        "python": platform.python_version(),
        "versions": {name: _version(dist) for name, dist in (
            ("ttsopt", "ttsopt"), ("torch", "torch"), ("transformers", "transformers"),
            ("llama_cpp", "llama_cpp_python"))},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def build_report(rows: Sequence[dict[str, Any]], *, machine: dict[str, Any], command: Sequence[str],
                 settings: dict[str, Any], loadavg_before: list[float] | None,
                 loadavg_after: list[float] | None) -> dict[str, Any]:
    """The JSON document: machine, exact command, settings, load, and every row with every key."""
    return {
        "machine": machine,
        "command": shlex.join(command),
        "settings": settings,
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg_after,
        "results": [normalise_row(r) for r in rows],
    }


def write_report(report: dict[str, Any], path: str | Path) -> None:
    """Write atomically, so a run interrupted mid-write never leaves a half file behind."""
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table_cells(row: dict[str, Any]) -> list[str]:
    """One table row as text, in ``TABLE_COLUMNS`` order; an error row shows ERROR after its identity."""
    ident = [str(row.get("engine")), str(row.get("policy")), str(row.get("workload"))]
    if row.get("status") != "ok":
        return ident + ["ERROR"] + ["-"] * (len(TABLE_COLUMNS) - 4)
    return ident + [
        _fmt(row.get("wall_s"), 2), _fmt(row.get("generated_tokens"), 0), _fmt(row.get("gen_tok_per_s"), 1),
        _fmt(row.get("prefill_tokens"), 0), _fmt(row.get("prefill_per_gen"), 2), _fmt(row.get("peak_rss_mib"), 0),
    ]


def render_table(rows: Sequence[dict[str, Any]], title: str | None = None):
    """A ``rich`` table of the rows (rich is imported here so the writer helpers stay import-light)."""
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(TABLE_COLUMNS):
        table.add_column(column, justify="left" if i < 3 else "right", no_wrap=True)
    for row in rows:
        cells = table_cells(row)
        table.add_row(*cells, style="red" if row.get("status") != "ok" else None)
    return table


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape

    # Piped or redirected output would be cut to rich's 80-column fallback; a log wants whole names.
    console = Console(width=None if sys.stdout.isatty() else 160)
    rows = report["results"]
    console.print(render_table(rows, title=f"throughput ({report['machine']['cpu_count']} CPUs)"))
    for row in rows:
        if row.get("status") != "ok":
            console.print(f"[red]{row['engine']} {row['policy']} {row['workload']}:[/red] {escape(str(row['error']))}",
                          highlight=False)
    console.print(f"loadavg {report['loadavg_before']} -> {report['loadavg_after']}; "
                  f"{report['machine']['platform']}, python {report['machine']['python']}", highlight=False)


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the docstring's layout and show every option's default."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    ap.add_argument("--engines", default="transformers,llamacpp", help="comma-separated: transformers, llamacpp")
    ap.add_argument("--policies", default="smollm2-135m,gemma3-270m",
                    help="comma-separated presets (mapped to llamacpp:PRESET on llama.cpp)")
    ap.add_argument("--workloads", default="sample:16,sample:64,beam:16,dvts:16",
                    help=f"comma-separated sample:N, beam:N, dvts:N (tree searches use m={TREE_WIDTH})")
    ap.add_argument("--problems", default="builtin:arith?per_level=2&seed=0",
                    help="problem source (ttsopt.data.load_problems)")
    ap.add_argument("--max-tokens", type=int, default=160, help="cap on one full solution")
    ap.add_argument("--step-max-tokens", type=int, default=64, help="cap on one step of a tree search")
    ap.add_argument("--max-depth", type=int, default=6, help="depth cap of a tree search, as in the arith-report sweep")
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    ap.add_argument("--seed", type=int, default=0, help="search seed (run_search)")
    ap.add_argument("--prm", default="calc", help="PRM spec for beam/dvts (mapped onto the engine like policies)")
    ap.add_argument("--threads", type=int, default=None,
                    help="TTSOPT_NUM_THREADS for every child; None leaves the engine's own default")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per configuration before it is an error row")
    ap.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                    help="one tiny untimed generate after loading")
    ap.add_argument("--out", default="throughput.json", help="JSON report (rewritten after every configuration)")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args._child is not None:
        return child_main(args._child)

    from ttsopt.search.registry import ENGINES

    engines, policies, workloads = _csv(args.engines), _csv(args.policies), _csv(args.workloads)
    if not engines or not policies or not workloads:
        ap.error("--engines, --policies and --workloads each need at least one entry")
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        ap.error(f"unknown engine(s) {unknown}; expected {', '.join(ENGINES)}")
    for w in workloads:
        try:
            parse_workload(w, args.max_depth)
        except ValueError as e:
            ap.error(str(e))
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")

    configs = [
        Config(engine=e, policy=p, workload=w, problems=args.problems, max_tokens=args.max_tokens,
               step_max_tokens=args.step_max_tokens, prm=args.prm, max_depth=args.max_depth,
               temperature=args.temperature, seed=args.seed, warmup=args.warmup)
        for e in engines for p in policies for w in workloads
    ]
    settings = {k: v for k, v in vars(args).items() if k != "_child"}
    machine = machine_info()
    command = [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv]
    load_before = loadavg()
    rows: list[dict[str, Any]] = []
    for i, config in enumerate(configs, 1):
        print(f"[{i}/{len(configs)}] {config.engine} {config.policy} {config.workload} ...",
              file=sys.stderr, flush=True)
        row = run_in_child(config, threads=args.threads, timeout=args.timeout)
        rows.append(row)
        summary = (f"{row['gen_tok_per_s']} gen tok/s, {row['wall_s']} s" if row["status"] == "ok"
                   else f"error: {str(row['error'])[:200]}")
        print(f"    {summary}", file=sys.stderr, flush=True)
        write_report(build_report(rows, machine=machine, command=command, settings=settings,
                                  loadavg_before=load_before, loadavg_after=loadavg()), args.out)
    report = build_report(rows, machine=machine, command=command, settings=settings,
                          loadavg_before=load_before, loadavg_after=loadavg())
    write_report(report, args.out)
    print_report(report)
    print(f"wrote {args.out}", file=sys.stderr)
    # Failed configurations are rows, not a failed run; only a run that measured nothing fails.
    return 0 if any(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
