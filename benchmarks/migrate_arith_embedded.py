"""Rewrite the arith-embedded snapshot (store schema 2, 2026-11-22) in schema 3, the layout of every snapshot.

What changes, row by row, with nothing re-generated:
- ids gain the seed (``arith-L1-0000`` -> ``arith-s0-L1-0000``) and every row its question key
  (the problems are regenerated from ``builtin:arith`` seed 0 and checked against the stored count);
- one compute measure: a tree row charged its prompt once per kept path per depth; now the prompt is
  charged once (the pooled/CoT rows' prompt count of the same policy and problem), the old figure is
  kept as ``policy_context_tokens``, and policy FLOPs are 2 x parameters x (prompt once + generated);
- ``replica`` 0, ``tokens``, ``unit`` (``migrated|...``).

What cannot change without the pools (which schema 2 did not export): pooled budgets were estimated
on 16 *random* subsets (at N = 1, 16 draws with repeats instead of the 16 singletons), and tree labels
are one run each. ``snapshot.json`` says so under ``migrated``; its config fingerprint is
``migrated-schema-2``, so no sweep resumes into it.

    python benchmarks/migrate_arith_embedded.py benchmarks/results/arith-embedded
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ttsopt.data import load_problems
from ttsopt.train.sweep.config import load_config
from ttsopt.train.sweep.presets import preset_config_path
from ttsopt.train.sweep.snapshot import COLUMN_ROLES, SNAPSHOT_FORMAT, probe_feature_table
from ttsopt.train.sweep.store import OUTCOME_COLUMNS, POOL_COLUMNS, PROBE_COLUMNS, SCHEMA_VERSION


def migrate(folder: Path) -> dict:
    old = pd.read_parquet(folder / "outcomes.parquet")
    problems = load_problems("builtin:arith", per_level=20, seed=0)
    by_old_id = {p.id.replace("arith-s0-", "arith-"): p for p in problems}
    missing = sorted(set(old["problem_id"]) - set(by_old_id))
    if missing:
        raise SystemExit(f"{len(missing)} stored ids are not builtin:arith seed 0: {missing[:3]}")
    df = old.copy()
    df["problem_id"] = [by_old_id[i].id for i in old["problem_id"]]
    df["question_key"] = [by_old_id[i].key for i in old["problem_id"]]
    df["replica"] = 0
    once = (df[df["method"].isin(["cot", "majority", "best_of_n"])]
            .groupby(["policy", "problem_id"])["policy_prompt_tokens"].agg(["min", "max"]))
    if (once["min"] != once["max"]).any():
        raise SystemExit("pooled and CoT rows disagree on a prompt's length")
    prompt_once = once["min"]
    flops_per_token = (old["policy_flops"] / (old["policy_prompt_tokens"] + old["policy_generated_tokens"])).round()
    df["policy_context_tokens"] = old["policy_prompt_tokens"]
    df["policy_prompt_tokens"] = [prompt_once[(p, i)] for p, i in zip(df["policy"], df["problem_id"])]
    df["policy_flops"] = flops_per_token * (df["policy_prompt_tokens"] + df["policy_generated_tokens"])  # 2 x params
    df["flops"] = df["policy_flops"] + df["prm_flops"]
    df["tokens"] = df["policy_prompt_tokens"] + df["policy_generated_tokens"] + df["prm_tokens"]
    df["unit"] = ["migrated|" + "|".join(map(str, k)) for k in zip(df["policy"], df["prm"], df["strategy"], df["seed"])]
    for col in ("candidates", "trace"):
        df[col] = None
    df = df[list(OUTCOME_COLUMNS)]
    units = pd.DataFrame({"unit": df["unit"].unique()})
    units["created_at"] = df.groupby("unit")["created_at"].min().loc[units["unit"]].to_numpy()

    (folder / "shards").mkdir(exist_ok=True)
    write = lambda frame, name: frame.to_parquet(folder / name, index=False, compression="zstd")  # noqa: E731
    write(units, "shards/00000-units.parquet")
    write(df, "shards/00000-outcomes.parquet")
    write(pd.DataFrame(columns=list(POOL_COLUMNS)), "shards/00000-pools.parquet")
    write(pd.DataFrame(columns=list(PROBE_COLUMNS)), "shards/00000-probes.parquet")
    write(pd.DataFrame([{"problem_id": p.id, "question_key": p.key, "question": p.question, "answer": p.answer,
                         "source": p.source, "metadata": json.dumps(p.metadata)} for p in problems]),
          "problems.parquet")
    write(probe_feature_table(None), "probe_features.parquet")
    features = pd.read_parquet(folder / "features.parquet")
    features["problem_id"] = [by_old_id[i].id for i in features["problem_id"]]
    write(features, "features.parquet")
    cfg = load_config(preset_config_path("arith-embedded"))
    manifest = {
        "format": SNAPSHOT_FORMAT, "store_schema": SCHEMA_VERSION, "name": "arith-embedded", "shards": ["00000"],
        "config_fingerprint": "migrated-schema-2", "config_fields": cfg.fingerprint_fields(), "models": {},
        "column_roles": COLUMN_ROLES,
        "counts": {"units": len(units), "outcomes": len(df), "pools": 0, "probes": 0},
        "migrated": {
            "from": "store schema 2 Parquet export of 2026-11-22 (benchmarks/results/arith-embedded/outcomes.parquet "
                    "in git history)",
            "pooled_subsets": "16 random subsets per budget (N = 1: 16 draws with repeats, not the 16 singletons)",
            "tree_replicas": 1, "probes": None, "pools": None,
            "compute": "tree rows re-charged: prompt once; old prompt count kept as policy_context_tokens",
        },
    }
    (folder / "snapshot.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    (folder / "outcomes.parquet").unlink()
    return manifest


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    print(json.dumps(migrate(parser.parse_args().folder)["counts"]))
