"""Files and tables for ``ttsopt route`` / ``ttsopt solve``: question files in, decision files out.

Kept out of ``cli.py`` so that the command stays a thin wrapper and the file handling is testable
on its own. A question file is JSONL, one object per line with a ``question`` (``problem`` and
``prompt`` are accepted too) and optionally an ``id`` (echoed in the output). Every line is
checked before any work starts, and a bad one is an error naming ``file:line``. Output lines are
appended and flushed batch by batch, so a crash loses at most the batch in flight, and
``resume`` skips the questions (by id, else by question key) the output already has.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from ttsopt.data.problem import question_key

QUESTION_FIELDS = ("question", "problem", "prompt")


class QuestionFileError(ValueError):
    """A question file that cannot be read as it is; the message names the file and line."""


def read_questions(path: str | Path) -> list[dict[str, Any]]:
    """``[{"question", "id" (or None), "line"}]`` of a JSONL file; a bad line raises naming ``path:line``."""
    path = Path(path)
    if not path.is_file():
        raise QuestionFileError(f"{path}: no such file")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise QuestionFileError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise QuestionFileError(f"{path}:{lineno}: expected a JSON object with a \"question\", "
                                        f"got {type(obj).__name__}")
            field = next((f for f in QUESTION_FIELDS if f in obj), None)
            if field is None:
                raise QuestionFileError(f"{path}:{lineno}: no \"question\" field (keys: {', '.join(obj) or 'none'})")
            q = obj[field]
            if not isinstance(q, str) or not q.strip():
                raise QuestionFileError(f"{path}:{lineno}: \"{field}\" must be a non-empty string, got {q!r:.60}")
            ident = obj.get("id")
            rows.append({"question": q, "id": None if ident is None else str(ident), "line": lineno})
    if not rows:
        raise QuestionFileError(f"{path}: no questions (an empty file)")
    return rows


def done_keys(out: str | Path) -> set[str]:
    """Ids and question keys already in an output file (a torn last line is ignored: it is redone)."""
    out = Path(out)
    keys: set[str] = set()
    if not out.is_file():
        return keys
    with out.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if obj.get("id") is not None:
                keys.add(f"id:{obj['id']}")
            if obj.get("question_key"):
                keys.add(f"key:{obj['question_key']}")
    return keys


def _row_key(row: dict[str, Any]) -> str:
    return f"id:{row['id']}" if row["id"] is not None else f"key:{question_key(row['question'])}"


def todo_rows(rows: Sequence[dict[str, Any]], out: str | Path, resume: bool) -> list[dict[str, Any]]:
    """The rows still to do. Without ``resume`` an output file with content is refused (no silent mixing)."""
    out = Path(out)
    if out.is_file() and out.stat().st_size > 0 and not resume:
        raise QuestionFileError(f"{out} exists: pass --resume to continue it, or remove it")
    done = done_keys(out) if resume else set()
    return [r for r in rows if _row_key(r) not in done]


def run_file(router: Any, rows: Sequence[dict[str, Any]], out: str | Path, budget: Any, *, solve: bool,
             batch: int = 16, progress: Callable[[int], None] | None = None, cascade: bool | str = False) -> int:
    """Route (or solve) ``rows`` in batches, appending one JSON line per question to ``out`` after each batch."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    for start in range(0, len(rows), batch):
        part = rows[start:start + batch]
        questions = [r["question"] for r in part]
        if solve:
            records = [s.to_dict() for s in router.solve_many(questions, budget, **({"cascade": cascade} if cascade else {}))]
        else:
            records = [d.to_dict() for d in router.route_many(questions, budget)]
        lines = []
        for row, rec in zip(part, records):
            key = rec.get("question_key") or rec["decision"]["question_key"]
            lines.append(json.dumps(_finite({"id": row["id"], "line": row["line"], "question_key": key, **rec}),
                                    allow_nan=False, default=str))
        with out.open("a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        written += len(part)
        if progress is not None:
            progress(len(part))
    return written


def _finite(obj: Any) -> Any:
    """NaN and infinities as null: strict JSON (a missing probe statistic is NaN in the model's input)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def decision_table(decision: Any, *, title: str | None = None):
    """The decision as a rich table: every strategy, its predicted accuracy, expected compute, the choice."""
    from rich.table import Table

    from rich import box

    d = decision
    probe = d.probe is not None
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("", justify="center", no_wrap=True)
    table.add_column("strategy", no_wrap=True)
    table.add_column("pred. acc", justify="right", no_wrap=True)
    table.add_column("tokens" + (" (+probe)" if probe else ""), justify="right", no_wrap=True)
    table.add_column("FLOPs", justify="right", no_wrap=True)
    if probe:
        table.add_column("reuses", justify="right", no_wrap=True)
    table.add_column("fits", justify="center", no_wrap=True)
    for c in d.candidates:
        chosen = c.strategy == d.strategy
        style = "bold green" if chosen else ("dim" if not c.fits else None)
        cells = ["→" if chosen else "", c.strategy, f"{c.predicted_accuracy:.3f}", f"{c.total_tokens:,.0f}",
                 f"{c.total_flops:.3g}"]
        if probe:
            cells.append(str(c.reuses_probe) if c.reuses_probe else "")
        table.add_row(*cells, "yes" if c.fits else "no", style=style)
    return table


def decision_summary(decision: Any) -> str:
    d = decision
    budget = ", ".join(f"{k}={v:g}" for k, v in d.budget.to_dict().items())
    if d.strategy is None:
        head = f"no strategy fits {budget}"
    else:
        head = f"chosen: {d.strategy} (predicted accuracy {d.predicted_accuracy:.3f})"
        if d.reached is not None:
            head += "; target reached" if d.reached else "; target NOT reached by any strategy (best one chosen)"
    if d.probe is not None:
        head += (f"\nprobe: k={d.probe['k']} answers {d.probe['answers']}, {d.probe['tokens']:,.0f} tokens, "
                 f"{d.probe['flops']:.3g} FLOPs")
    return f"pair {d.pair}, budget {budget}, decided in {d.seconds * 1e3:.1f} ms\n{head}"


__all__ = ["QUESTION_FIELDS", "QuestionFileError", "decision_summary", "decision_table", "done_keys",
           "read_questions", "run_file", "todo_rows"]
