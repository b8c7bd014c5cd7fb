"""What every command shares: the console, the one way to fail, progress bars, argument checks.

Nothing heavy is imported here at import time (rich only inside the functions), so ``ttsopt --help``
stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Sequence

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


def console() -> "Console":
    """The console of messages and progress: stderr, so that stdout carries only a command's output."""
    from rich.console import Console

    return Console(stderr=True)


def fail(message: str, con: "Console | None" = None) -> NoReturn:
    """Print ``error: MESSAGE`` and exit with status 2 (a usage or input error)."""
    from rich.markup import escape

    (con or console()).print(f"[red]error:[/] {escape(str(message))}")
    raise typer.Exit(2)


def progress_bar(con: "Console", *, remaining: bool = False) -> "Progress":
    """A rich progress display: description, bar, done/total, elapsed (and, with ``remaining``, an
    estimate of the time left). Use it as a context manager."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=con)


class SweepBars:
    """Adapter from the sweep's progress protocol to rich bars (one per pair and strategy)."""

    def __init__(self, progress: "Progress") -> None:
        self.progress, self.tasks = progress, {}

    def start(self, name: str, total: int, done: int = 0) -> None:
        self.tasks[name] = self.progress.add_task(name, total=total, completed=done)

    def advance(self, name: str, k: int) -> None:
        self.progress.advance(self.tasks[name], k)

    def update(self, name: str, completed: int) -> None:  # other drivers of the store count too
        self.progress.update(self.tasks[name], completed=completed)


def check_engine(engine: str, con: "Console | None" = None) -> str:
    """``engine``, if it is one of the registry's engines; else fail naming them."""
    from ttsopt.search.registry import ENGINES

    if engine not in ENGINES:
        fail(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}", con)
    return engine


def check_snapshots(data: Sequence[Path], con: "Console | None" = None) -> None:
    """Fail unless every folder of ``data`` is a sweep snapshot (has a snapshot.json)."""
    missing = [str(d) for d in data if not (Path(d) / "snapshot.json").is_file()]
    if missing:
        fail(f"not sweep snapshot folders (no snapshot.json): {', '.join(missing)}", con)


__all__ = ["SweepBars", "check_engine", "check_snapshots", "console", "fail", "progress_bar"]
