"""A sweep's store as committed Parquet files, and the store rebuilt from them.

A sweep outlives a machine (a spot instance, a session's time limit, a second machine
without a shared file system) only if what it has done can travel as files and be resumed
from. A snapshot folder holds:

- ``snapshot.json``: the store's schema, the config fingerprint and fields, each model's
  fingerprint, the column roles (which columns a router may use online, which are oracle
  labels it must never see), the list of shards and row counts;
- ``shards/NNNNN-{units,outcomes,pools,probes}.parquet``: whole units, append-only: each
  export writes only the units committed since the last one, so committing a snapshot
  every half hour adds the new rows, not a rewrite;
- ``problems.parquet``: every problem with its question key, question, gold answer and
  metadata;
- ``probe_features.parquet``: the ``probe_*`` columns per (policy, PRM, problem, k), derived
  from the probe shards by the code the online router runs (``selector/probe.py``);
- ``features.parquet``: the per-problem text statistics and raw embeddings the sweep wrote
  next to its store (``train/sweep/driver.py`` ``write_problem_features``), copied in when given.

:func:`import_snapshot` writes every unit of a snapshot into a store (those the store has are
skipped), so ``ttsopt sweep CONFIG --from DIR`` resumes on another machine without redoing
or duplicating a unit. Parquet files are zstd-compressed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ttsopt.data.files import atomic_path, atomic_write_bytes, atomic_write_text
from ttsopt.selector.pipeline import ORACLE_COLUMNS as _ROUTER_ORACLE

from .store import SCHEMA_VERSION, OutcomeStore, StoreMismatchError

SNAPSHOT_FORMAT = 1
TABLES = ("units", "outcomes", "pools", "probes")

#: What each column of the exported data is for. A router may take inputs only from
#: ``online`` columns (and features computed from the question); ``oracle`` columns come from
#: the sweep's own outcomes or from the problem generator and are never inputs.
COLUMN_ROLES: dict[str, list[str]] = {
    "key": ["policy", "prm", "problem_id", "question_key", "strategy", "seed", "replica", "unit", "k"],
    "online": ["method", "n", "m", "agg", "vote", "max_depth", "txt_*", "raw_emb_*", "probe_*"],
    "label": ["correct", "answer"],
    "compute": ["policy_prompt_tokens", "policy_generated_tokens", "prm_tokens", "tokens", "policy_context_tokens",
                "policy_flops", "prm_flops", "flops", "wall_time_s", "probe_cost_tokens", "probe_cost_flops"],
    "oracle": ["pass_at_1", "difficulty", "level", "kind"],
    "provenance": ["n_subsets", "pooled", "engine", "source", "created_at", "candidates", "trace"],
}
ORACLE_COLUMNS = tuple(COLUMN_ROLES["oracle"])
assert ORACLE_COLUMNS == _ROUTER_ORACLE, "the snapshot's oracle columns are the ones a router refuses"


def _parquet(frame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False, compression="zstd")


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "snapshot.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no snapshot.json (not a ttsopt sweep snapshot)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != SNAPSHOT_FORMAT or manifest.get("store_schema") != SCHEMA_VERSION:
        raise StoreMismatchError(f"{path}: snapshot format {manifest.get('format')} / store schema "
                                 f"{manifest.get('store_schema')}; this ttsopt reads {SNAPSHOT_FORMAT} / {SCHEMA_VERSION}")
    return manifest


def export_snapshot(store: OutcomeStore, folder: str | Path, *, name: str | None = None,
                    features: str | Path | None = None) -> dict[str, Any]:
    """Write the units committed since the last export as one new shard; refresh the manifest,
    problems, probe features and (given its path) the problem features. Returns the manifest."""
    import pandas as pd

    folder = Path(folder)
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder) if (folder / "snapshot.json").exists() else {
        "format": SNAPSHOT_FORMAT, "store_schema": SCHEMA_VERSION, "name": name, "shards": []}
    meta = dict(store.table("meta").itertuples(index=False, name=None))
    if manifest.get("config_fingerprint") not in (None, meta.get("config_fingerprint")):
        raise StoreMismatchError(f"{folder}: snapshot of config {manifest['config_fingerprint']}, store has "
                                 f"{meta.get('config_fingerprint')}")
    exported = set()
    for shard in manifest["shards"]:
        exported |= set(pd.read_parquet(folder / "shards" / f"{shard}-units.parquet")["unit"])
    units = store.table("units")
    new = units[~units["unit"].isin(exported)]
    if len(new):
        shard = f"{len(manifest['shards']):05d}"
        for table in TABLES:
            frame = new if table == "units" else store.table(table, units=new["unit"])
            _parquet(frame, folder / "shards" / f"{shard}-{table}.parquet")
        manifest["shards"].append(shard)
    _parquet(store.table("problems"), folder / "problems.parquet")
    _parquet(probe_feature_table(_concat(folder, manifest["shards"], "probes")), folder / "probe_features.parquet")
    if features is not None:
        atomic_write_bytes(folder / "features.parquet", Path(features).read_bytes())
    manifest.update({
        "config_fingerprint": meta.get("config_fingerprint"),
        "config_fields": json.loads(meta["config_fields"]) if "config_fields" in meta else None,
        "models": {k: v for k, v in meta.items() if k.startswith(("policy:", "prm:"))},
        "column_roles": COLUMN_ROLES,
        "counts": {t: int(sum(len(pd.read_parquet(folder / "shards" / f"{s}-{t}.parquet"))
                              for s in manifest["shards"])) for t in TABLES},
    })
    atomic_write_text(folder / "snapshot.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def read_table(folder: str | Path, table: str):
    """One table of a snapshot, all shards concatenated (JSON columns as text)."""

    if table not in TABLES:
        raise ValueError(f"unknown snapshot table {table!r}; expected one of {TABLES}")
    return _concat(Path(folder), read_manifest(folder)["shards"], table)


def _concat(folder: Path, shards: list[str], table: str):
    import pandas as pd

    frames = [pd.read_parquet(folder / "shards" / f"{s}-{table}.parquet") for s in shards]
    frames = [f for f in frames if len(f)]
    if not frames:
        from .store import OUTCOME_COLUMNS, POOL_COLUMNS, PROBE_COLUMNS

        cols = {"units": ("unit", "created_at"), "outcomes": OUTCOME_COLUMNS, "pools": POOL_COLUMNS,
                "probes": PROBE_COLUMNS}[table]
        return pd.DataFrame(columns=list(cols))
    return pd.concat(frames, ignore_index=True)


def import_snapshot(folder: str | Path, store: OutcomeStore, *, fingerprint: str | None = None) -> int:
    """Write every unit of the snapshot the store does not have yet; returns how many.

    ``fingerprint``: the config the caller will resume with; a snapshot made with another is
    refused before anything is written.
    """
    import pandas as pd

    folder = Path(folder)
    manifest = read_manifest(folder)
    if fingerprint is not None and manifest.get("config_fingerprint") not in (None, fingerprint):
        raise StoreMismatchError(f"{folder}: snapshot made with config fingerprint "
                                 f"{manifest['config_fingerprint']}, resuming with {fingerprint}")
    if manifest.get("config_fingerprint"):
        store.claim("config_fingerprint", manifest["config_fingerprint"], what="the snapshot's configuration")
    if manifest.get("config_fields") is not None:
        store.claim("config_fields", json.dumps(manifest["config_fields"], sort_keys=True),
                    what="the snapshot's configuration")
    for key, value in (manifest.get("models") or {}).items():
        store.claim(key, value, what=f"the model behind {key}")
    problems = pd.read_parquet(folder / "problems.parquet")
    store.add_problems(_problems_of(problems))
    done = store.done_units()
    imported = 0
    for shard in manifest["shards"]:
        frames = {t: pd.read_parquet(folder / "shards" / f"{shard}-{t}.parquet") for t in TABLES}
        by_unit = {t: _group(frames[t]) for t in TABLES if t != "units"}
        for unit, created_at in frames["units"][["unit", "created_at"]].itertuples(index=False):
            if unit in done:
                continue
            # exist_ok: drivers started together on one store may all import the same snapshot
            imported += store.commit_unit(unit, created_at=float(created_at), exist_ok=True,
                                          **{t: by_unit[t].get(unit, []) for t in ("outcomes", "pools", "probes")})
    return imported


def _group(frame) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in frame.to_dict("records"):
        row = {k: (None if _missing(v) else v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        out.setdefault(row["unit"], []).append(row)
    return out


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _problems_of(frame) -> Iterable:
    from ttsopt.data import Problem

    for row in frame.to_dict("records"):
        problem = Problem(row["problem_id"], row["question"], row["answer"], row["source"] or "",
                          json.loads(row["metadata"]) if row["metadata"] else {})
        if problem.key != row["question_key"]:
            raise StoreMismatchError(f"problem {problem.id}: stored question key {row['question_key']} is not "
                                     f"the key of its text ({problem.key}); the snapshot was edited")
        yield problem


def read_outcomes(path: str | Path):
    """Outcome rows of a store (.sqlite), an exported .parquet file or a snapshot folder, as a DataFrame."""
    path = Path(path)
    if path.is_dir():
        return read_table(path, "outcomes").drop(columns=["candidates", "trace"], errors="ignore")
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path)
    with OutcomeStore(path) as store:
        return store.outcomes()



def probe_feature_table(probes):
    """``probe_*`` columns (and the probe's cost) per (policy, PRM, problem, seed, k), for k in PROBE_KS.

    A PRM's row scores the policy's probe samples; the PRM-free probe (prm "") has no PRM
    columns. Computed by :func:`ttsopt.selector.probe.probe_row`, the router's own code.
    """
    import pandas as pd

    from ttsopt.selector.probe import PROBE_KS, probe_from_stored, probe_row

    if probes is None or not len(probes):
        return pd.DataFrame(columns=["policy", "prm", "problem_id", "seed", "k"])
    samples = {(r.policy, r.problem_id, r.seed): (json.loads(r.candidates), json.loads(r.compute))
               for r in probes[probes["prm"] == ""].itertuples()}
    rows = []
    for r in probes.itertuples():
        base = samples.get((r.policy, r.problem_id, r.seed))
        if base is None:
            continue
        scores = None if r.prm == "" else {"candidates": json.loads(r.candidates), "compute": json.loads(r.compute)}
        probe = probe_from_stored(base[0], base[1], scores)
        for k in PROBE_KS:
            if k <= len(probe.samples):
                rows.append({"policy": r.policy, "prm": r.prm, "problem_id": r.problem_id, "seed": int(r.seed),
                             "k": k, **probe_row(probe, k)})
    return pd.DataFrame(rows)


__all__ = ["COLUMN_ROLES", "ORACLE_COLUMNS", "export_snapshot", "import_snapshot", "probe_feature_table",
           "read_manifest", "read_table"]
