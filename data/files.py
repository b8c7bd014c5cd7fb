"""Atomic file writes: a reader, or a second process writing the same file, never sees half of one.
And JSONL files appended batch by batch (``ttsopt run``): each batch on disk before the next runs.

Every writer here (feature caches, store and snapshot exports, de-quantised model folders,
benchmark reports) writes to a temporary name that is unique to the process *and* the call
in the target's own folder, then ``os.replace``s it onto the target. Unique names matter
because several sweep drivers share one store folder: two drivers exporting at the same
moment through a fixed ``x.tmp`` would write into each other's file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextmanager
def atomic_path(path: str | Path, *, directory: bool = False, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; on success it replaces ``path``.

    ``directory``: the temporary path is an empty folder (for ``save_pretrained`` and the like).
    ``keep_existing``: if ``path`` appeared meanwhile (another process made the same cache
    entry), keep that one and discard ours. On an exception the temporary path is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if not directory:  # mkstemp makes 0600; a published file gets the usual mode
            os.chmod(tmp, 0o666 & ~_UMASK)
        if keep_existing and path.exists():
            _remove(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any thread writes
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _remove(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, one per non-blank line. A line that does not parse (the torn
    last line of a killed writer) is skipped: whatever it held is simply redone."""
    rows = []
    with Path(path).open() as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return rows


def append_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append ``rows`` to ``path`` (created with its folder), one JSON object per line, flushed and
    fsynced before returning: a batch appended is a batch that survives a kill. After a torn last line
    (no newline) the batch starts on a line of its own, so the torn line alone is lost."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if path.exists() and path.stat().st_size:
        with path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                text = "\n" + text
    with path.open("a") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


__all__ = ["append_jsonl", "atomic_path", "atomic_write_bytes", "atomic_write_text", "read_jsonl"]
