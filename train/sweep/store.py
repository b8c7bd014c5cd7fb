"""The outcome store: one row per (policy, PRM, problem, strategy, seed), append-only.

SQLite in WAL mode, because it is in the standard library, a transaction is atomic
and durable on commit (a ``kill -9`` loses at most the unit in flight, never half of
it), readers (pandas, a notebook watching the sweep) never block the single writer,
and primary keys make "none twice" a constraint rather than a hope. DuckDB would do
the same but adds a dependency and one writer process per file; Parquet shards need
a manifest to be crash-safe. ``export_parquet`` gives the columnar copy for analysis.

Units of work (a pool of samples, one beam-search run) are written in one
transaction together with their derived rows, so a restarted sweep finds each unit
either wholly present or wholly absent and redoes only the absent ones.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ttsopt.data.files import atomic_path

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
# 2 added outcomes.engine. 3: tree runs have replicas (outcomes.replica, in the key), rows carry
# their unit, the question key and one compute measure (prompt once: tokens; re-sent prompt
# tokens apart: policy_context_tokens), probes have their own table, the sweep's config
# fingerprint is in meta. Stores of schema 1-2 are refused (their ids and compute differ).

OUTCOME_COLUMNS = (
    "policy", "prm", "problem_id", "question_key", "strategy", "seed", "replica",
    "method", "n", "m", "agg", "vote", "max_depth",
    "answer", "correct", "n_subsets", "pooled",
    "policy_prompt_tokens", "policy_generated_tokens", "prm_tokens", "tokens", "policy_context_tokens",
    "policy_flops", "prm_flops", "flops",
    "wall_time_s", "level", "source", "pass_at_1", "difficulty", "candidates", "trace", "created_at",
    "engine", "unit",
)
POOL_COLUMNS = ("policy", "prm", "problem_id", "seed", "n_max", "candidates", "compute", "created_at", "unit")
PROBE_COLUMNS = ("policy", "prm", "problem_id", "seed", "k", "candidates", "compute", "created_at", "unit")
PROBLEM_COLUMNS = ("problem_id", "question_key", "question", "answer", "source", "metadata")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outcomes (
    policy TEXT NOT NULL, prm TEXT NOT NULL, problem_id TEXT NOT NULL, question_key TEXT,
    strategy TEXT NOT NULL, seed INTEGER NOT NULL, replica INTEGER NOT NULL DEFAULT 0,
    method TEXT NOT NULL, n INTEGER NOT NULL, m INTEGER NOT NULL, agg TEXT, vote TEXT, max_depth INTEGER,
    answer TEXT, correct REAL NOT NULL, n_subsets INTEGER NOT NULL, pooled INTEGER NOT NULL,
    policy_prompt_tokens REAL NOT NULL, policy_generated_tokens REAL NOT NULL, prm_tokens REAL NOT NULL,
    tokens REAL NOT NULL, policy_context_tokens REAL NOT NULL,
    policy_flops REAL NOT NULL, prm_flops REAL NOT NULL, flops REAL NOT NULL, wall_time_s REAL NOT NULL,
    level TEXT, source TEXT, pass_at_1 REAL, difficulty TEXT, candidates TEXT, trace TEXT,
    created_at REAL NOT NULL, engine TEXT, unit TEXT,
    PRIMARY KEY (policy, prm, problem_id, strategy, seed, replica)
);
CREATE TABLE IF NOT EXISTS pools (
    policy TEXT NOT NULL, prm TEXT NOT NULL, problem_id TEXT NOT NULL, seed INTEGER NOT NULL,
    n_max INTEGER NOT NULL, candidates TEXT NOT NULL, compute TEXT NOT NULL, created_at REAL NOT NULL, unit TEXT,
    PRIMARY KEY (policy, prm, problem_id, seed)
);
CREATE TABLE IF NOT EXISTS probes (
    policy TEXT NOT NULL, prm TEXT NOT NULL, problem_id TEXT NOT NULL, seed INTEGER NOT NULL,
    k INTEGER NOT NULL, candidates TEXT NOT NULL, compute TEXT NOT NULL, created_at REAL NOT NULL, unit TEXT,
    PRIMARY KEY (policy, prm, problem_id, seed)
);
CREATE TABLE IF NOT EXISTS problems (
    problem_id TEXT PRIMARY KEY, question_key TEXT NOT NULL, question TEXT NOT NULL, answer TEXT NOT NULL,
    source TEXT, metadata TEXT
);
CREATE TABLE IF NOT EXISTS units (unit TEXT PRIMARY KEY, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS leases (unit TEXT PRIMARY KEY, owner TEXT NOT NULL, heartbeat REAL NOT NULL);
"""

#: A lease whose holder runs on another host (or in a process this host cannot see) is
#: taken over when its holder has not committed anything for this long.
LEASE_STALE_S = 2 * 3600.0


def lease_owner() -> str:
    """This driver's name in the leases table: host, process id and a random tag."""
    import os
    import socket
    import uuid

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_alive(owner: str, heartbeat: float, now: float, stale_after_s: float) -> bool:
    """A holder on this host is alive while its process is; one elsewhere while it commits."""
    import os
    import socket

    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return now - heartbeat < stale_after_s


class StoreMismatchError(RuntimeError):
    """The store was made by another configuration, model or problem set than the one resuming it."""


@dataclass(frozen=True)
class OutcomeKey:
    policy: str
    prm: str
    problem_id: str
    strategy: str
    seed: int


def _enable_wal(db: sqlite3.Connection, wait_s: float = 60.0) -> None:
    """Switch to WAL, waiting out another process that is creating the same file: changing the
    journal mode needs an exclusive lock, and SQLite's busy timeout does not cover it."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class OutcomeStore:
    """A sweep's results in one SQLite file.

    Several drivers may share a store: each commit is one short transaction, and SQLite's
    lock (waited on for up to 60 s) orders them. A driver *leases* the units it is about to
    compute (:meth:`take`), so drivers started on the same work split it between them
    instead of computing it twice; a lease ends when its unit is committed, when its holder
    releases it, or when its holder is gone (a dead process on this host, or no commit for
    ``LEASE_STALE_S`` from another host).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
        _enable_wal(self._db)
        # FULL: a committed unit survives power loss too, not just a killed process.
        self._db.execute("PRAGMA synchronous=FULL")
        with self._transaction() as db:  # one driver creates the file; the others wait and see it done
            old = db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() if old else None
            if row is not None and int(row[0]) != SCHEMA_VERSION:
                raise StoreMismatchError(
                    f"{self.path}: outcome store schema {row[0]}, this ttsopt writes {SCHEMA_VERSION} "
                    "(problem ids, tree replicas and the compute measure changed); rebuild it with "
                    "`ttsopt sweep` into a new store")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "OutcomeStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- units ---------------------------------------------------------------------------
    def has_unit(self, unit: str) -> bool:
        return self._db.execute("SELECT 1 FROM units WHERE unit=?", (unit,)).fetchone() is not None

    def done_units(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT unit FROM units")}

    def commit_unit(self, unit: str | Sequence[str], outcomes: Sequence[dict[str, Any]] = (),
                    pools: Sequence[dict[str, Any]] = (), probes: Sequence[dict[str, Any]] = (),
                    *, created_at: float | None = None, exist_ok: bool = False) -> bool:
        """Write a unit's rows and mark it (or several units) done, atomically; returns True.

        Every row records the unit that wrote it (the first of ``unit`` when a row does not
        say), so a snapshot can carry whole units. Writing a done unit again raises
        ``sqlite3.IntegrityError`` and writes nothing; with ``exist_ok`` it writes nothing and
        returns False (another process committed the unit first: its rows are kept).
        """
        try:
            self._commit(unit, outcomes, pools, probes, created_at)
        except sqlite3.IntegrityError:
            units = [unit] if isinstance(unit, str) else list(unit)
            if exist_ok and any(self.has_unit(u) for u in units):
                return False
            raise
        return True

    def _commit(self, unit, outcomes, pools, probes, created_at) -> None:
        now = time.time() if created_at is None else created_at
        units = [unit] if isinstance(unit, str) else list(unit)
        with self._transaction() as db:
            for u in units:
                db.execute("INSERT INTO units VALUES (?, ?)", (u, now))
                db.execute("DELETE FROM leases WHERE unit=?", (u,))
            for table, columns, rows in (("pools", POOL_COLUMNS, pools), ("probes", PROBE_COLUMNS, probes),
                                         ("outcomes", OUTCOME_COLUMNS, outcomes)):
                for r in rows:
                    row = {"unit": units[0], "replica": 0, **r, "created_at": r.get("created_at", now)}
                    for k in ("candidates", "trace", "compute"):
                        if row.get(k) is not None and not isinstance(row[k], str):
                            row[k] = json.dumps(row[k])
                    if row.get("level") is not None:
                        row["level"] = str(row["level"])
                    db.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                               tuple(row.get(c) for c in columns))

    # -- leases: drivers sharing a store split its work --------------------------------------
    def take(self, units: Sequence[str], owner: str, *, stale_after_s: float = LEASE_STALE_S) -> list[str]:
        """Lease those of ``units`` that are neither done nor leased by a live other driver;
        returns them, in order. One transaction, so two drivers never take the same unit."""
        now = time.time()
        taken = []
        with self._transaction() as db:
            for u in units:
                if db.execute("SELECT 1 FROM units WHERE unit=?", (u,)).fetchone():
                    continue
                held = db.execute("SELECT owner, heartbeat FROM leases WHERE unit=?", (u,)).fetchone()
                if held and held[0] != owner and lease_alive(held[0], held[1], now, stale_after_s):
                    continue
                db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (u, owner, now))
                taken.append(u)
        return taken

    def release(self, owner: str, units: Sequence[str] | None = None) -> None:
        """End ``owner``'s leases (all of them, or those of ``units``)."""
        with self._transaction() as db:
            if units is None:
                db.execute("DELETE FROM leases WHERE owner=?", (owner,))
            for u in units or ():
                db.execute("DELETE FROM leases WHERE unit=? AND owner=?", (u, owner))

    def heartbeat(self, owner: str) -> None:
        """Mark ``owner``'s leases fresh (a driver calls it after every commit)."""
        with self._transaction() as db:
            db.execute("UPDATE leases SET heartbeat=? WHERE owner=?", (time.time(), owner))

    def live_drivers_here(self, *, exclude: str = "") -> set[str]:
        """The live drivers on this host that hold leases in this store, other than ``exclude``
        (a driver asks to learn how many processes share its cores)."""
        import socket

        now, host = time.time(), socket.gethostname()
        held = self._db.execute("SELECT owner, MAX(heartbeat) FROM leases GROUP BY owner").fetchall()
        return {o for o, hb in held if o != exclude and o.partition(":")[0] == host
                and lease_alive(o, hb, now, LEASE_STALE_S)}

    def leases(self) -> dict[str, str]:
        """unit -> the driver holding it."""
        return dict(self._db.execute("SELECT unit, owner FROM leases").fetchall())

    def rows(self, table: str = "outcomes", **equal: Any) -> list[dict[str, Any]]:
        """The rows of ``table`` whose columns equal ``equal``, as stored (JSON columns as text)."""
        columns = {"outcomes": OUTCOME_COLUMNS, "pools": POOL_COLUMNS, "probes": PROBE_COLUMNS}[table]
        unknown = sorted(set(equal) - set(columns))
        if unknown:
            raise ValueError(f"{table} has no columns {unknown}")
        where = " AND ".join(f"{k}=?" for k in equal) or "1"
        cur = self._db.execute(f"SELECT * FROM {table} WHERE {where}", tuple(equal.values()))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def add_problems(self, problems: Iterable) -> None:
        """Record the problems a sweep runs on; a stored id whose question or gold answer
        differs is an error (a corrected answer would silently mix two labelings)."""
        with self._transaction() as db:
            for p in problems:
                known = db.execute("SELECT question, answer FROM problems WHERE problem_id=?", (p.id,)).fetchone()
                if known is None:
                    db.execute("INSERT INTO problems VALUES (?, ?, ?, ?, ?, ?)",
                               (p.id, p.key, p.question, p.answer, p.source, json.dumps(p.metadata, default=str)))
                elif tuple(known) != (p.question, p.answer):
                    what = "gold answer" if known[0] == p.question else "question"
                    raise StoreMismatchError(
                        f"{self.path}: problem {p.id!r} is stored with another {what} "
                        f"({known[1] if what == 'gold answer' else known[0]!r} vs "
                        f"{p.answer if what == 'gold answer' else p.question!r}); its rows were graded against the "
                        "stored one: give the corrected problem a new id, or sweep into a new store")

    # -- what made the rows -------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def claim(self, key: str, value: str, *, what: str) -> None:
        """Record ``value`` under ``key`` the first time; refuse a different value later.

        Used for the sweep's config fingerprint and each model's fingerprint: rows made
        under one configuration must never be resumed under another.
        """
        with self._transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES (?, ?)", (key, value))
                return
        if row[0] != value:
            raise StoreMismatchError(f"{self.path}: {what} differs from the one this store was made with "
                                     f"({key}: stored {row[0][:200]}, now {value[:200]}); sweep into a new store "
                                     "or restore the original settings")

    # -- reading ---------------------------------------------------------------------------
    def pool(self, policy: str, prm: str, problem_id: str, seed: int, *, table: str = "pools") -> dict[str, Any] | None:
        """A stored pool (or, with ``table="probes"``, a probe) of one problem."""
        if table not in ("pools", "probes"):
            raise ValueError(f"unknown pool table {table!r}")
        size = "n_max" if table == "pools" else "k"
        row = self._db.execute(
            f"SELECT {size}, candidates, compute FROM {table} WHERE policy=? AND prm=? AND problem_id=? AND seed=?",
            (policy, prm, problem_id, seed),
        ).fetchone()
        if row is None:
            return None
        return {size: row[0], "candidates": json.loads(row[1]), "compute": json.loads(row[2])}

    def count(self, table: str = "outcomes") -> int:
        if table not in ("outcomes", "pools", "probes", "problems", "units"):
            raise ValueError(f"unknown table {table!r}")
        return self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def outcomes(self, *, with_candidates: bool = False):
        """All outcome rows as a pandas DataFrame (candidates/trace JSON left out unless asked)."""
        import pandas as pd

        cols = [c for c in OUTCOME_COLUMNS if with_candidates or c not in ("candidates", "trace")]
        return pd.read_sql_query(f"SELECT {', '.join(cols)} FROM outcomes ORDER BY rowid", self._db)

    def problems(self):
        import pandas as pd

        return pd.read_sql_query("SELECT * FROM problems ORDER BY rowid", self._db)

    def table(self, name: str, *, units: Iterable[str] | None = None):
        """A whole table (or its rows of some ``units``) as a DataFrame, JSON columns as text."""
        import pandas as pd

        if name not in ("outcomes", "pools", "probes", "units", "problems", "meta"):
            raise ValueError(f"unknown table {name!r}")
        if units is None:
            return pd.read_sql_query(f"SELECT * FROM {name} ORDER BY rowid", self._db)
        with self._transaction() as db:  # a temporary table of the wanted units, for one join
            db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (unit TEXT PRIMARY KEY)")
            db.execute("DELETE FROM wanted")
            db.executemany("INSERT OR IGNORE INTO wanted VALUES (?)", [(u,) for u in units])
        return pd.read_sql_query(f"SELECT t.* FROM {name} t JOIN wanted w ON t.unit = w.unit ORDER BY t.rowid",
                                 self._db)

    def export_parquet(self, path: str | Path, *, with_candidates: bool = False) -> Path:
        """Write the outcome table as Parquet, atomically (drivers sharing a store may export at once)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            self.outcomes(with_candidates=with_candidates).to_parquet(tmp, index=False)
        return path


def commit_new(store: OutcomeStore, key: str, rows: dict[str, list[dict]]) -> bool:
    """Commit a computed unit unless another driver on the store committed it meanwhile
    (two drivers given overlapping work): theirs is kept, this one's dropped with a warning,
    and the sweep goes on rather than dying on the store's unique key."""
    if store.commit_unit(key, **rows, exist_ok=True):
        return True
    log.warning("unit %s was committed by another driver of this store meanwhile; kept theirs", key)
    return False


def claim_models(store: OutcomeStore, fingerprints: dict[str, str]) -> None:
    """Each model's fingerprint (name, parameters, rendered prompt): a changed prompt or model is refused."""
    for key, value in fingerprints.items():
        store.claim(key, value, what=f"the model behind {key}")

