"""Model inputs from a training or routing frame: the one place that decides what a router sees.

The offline table (``train/fit/table.py``) and the online router build their LightGBM input frame
with the same :class:`FeaturePipeline`, saved as JSON in the router artifact (the PCA as
numbers, the categories in order). Columns that come from the sweep's own outcomes or from
the problem generator (``ORACLE_COLUMNS``) are refused as inputs by :func:`check_inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd

from .features import TEXT_COLUMNS, PCAReducer

#: Never inputs: they come from the sweep's outcomes (Pass@1 of the pool, its bin) or from the
#: problem generator (level, kind), not from the question a router is given.
ORACLE_COLUMNS = ("pass_at_1", "difficulty", "level", "kind")
#: Labels and outcomes of the strategy being predicted.
LABEL_COLUMNS = ("label", "correct", "answer", "runs")

PROBE_FEATURES = ("probe_agreement", "probe_entropy", "probe_distinct", "probe_answered", "probe_prm_mean",
                  "probe_prm_max", "probe_prm_min", "probe_logprob_mean", "probe_tokens_mean")
PAIR_FEATURES = ("policy_name", "policy_log10_params", "prm_family", "prm_log10_params")
STRATEGY_FEATURES = ("strategy_method", "strategy_n", "strategy_m", "strategy_log2_n", "strategy_agg",
                     "strategy_vote", "strategy_uses_prm")
CATEGORICAL = ("policy_name", "prm_family", "strategy_method", "strategy_agg", "strategy_vote")


class LeakError(ValueError):
    """An input column that a router could not see online."""


def check_inputs(columns: Sequence[str]) -> None:
    """Refuse any oracle column (or a column derived from one by name) as a model input."""
    leaks = [c for c in columns if c in ORACLE_COLUMNS or c in LABEL_COLUMNS]
    if leaks:
        raise LeakError(f"oracle or label column(s) {leaks} cannot be router inputs: they come from the "
                        "sweep's own outcomes or the problem generator, not from the question")


@dataclass
class FeaturePipeline:
    """Raw training rows -> model inputs: text statistics, PCA'd embeddings, descriptors, probes.

    Fitted on training problems only (the PCA); categories are fixed from the training rows so
    a prediction frame always encodes a category with the same code.
    """

    pca: PCAReducer | None
    categories: dict[str, list[str]]
    probes: bool = False

    @property
    def columns(self) -> list[str]:
        emb = [f"emb_{i}" for i in range(self.pca.n_components)] if self.pca is not None else []
        probe = list(PROBE_FEATURES) if self.probes else []
        return [*TEXT_COLUMNS, *emb, *probe, *PAIR_FEATURES, *STRATEGY_FEATURES]

    @classmethod
    def fit(cls, table: pd.DataFrame, *, n_components: int = 8, probes: bool = False) -> "FeaturePipeline":
        raw = [c for c in table.columns if c.startswith("raw_emb_")]
        pca = None
        if raw and n_components > 0:
            per_problem = table.drop_duplicates("question_key")[raw].to_numpy()
            pca = PCAReducer.fit(per_problem, min(n_components, len(per_problem) - 1, len(raw)), encoder="minilm")
        cats = {c: sorted(map(str, table[c].dropna().unique())) for c in CATEGORICAL}
        return cls(pca, cats, probes)

    def transform(self, table: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=table.index)
        for c in TEXT_COLUMNS:
            out[c] = table[c].astype(float)
        if self.pca is not None:
            raw = sorted((c for c in table.columns if c.startswith("raw_emb_")), key=lambda c: int(c.rsplit("_", 1)[1]))
            emb = self.pca.transform(table[raw].to_numpy())
            for i in range(emb.shape[1]):
                out[f"emb_{i}"] = emb[:, i]
        if self.probes:
            for c in PROBE_FEATURES:
                out[c] = table[c].astype(float)
        for c in (*PAIR_FEATURES, *STRATEGY_FEATURES):
            out[c] = table[c]
        for c in CATEGORICAL:
            out[c] = pd.Categorical(table[c].astype(str), categories=self.categories[c])
        check_inputs(out.columns)
        return out[self.columns]

    def to_dict(self) -> dict[str, Any]:
        return {"pca": None if self.pca is None else self.pca.to_dict(), "categories": self.categories,
                "probes": self.probes, "columns": self.columns, "categorical": list(CATEGORICAL)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeaturePipeline":
        pipe = cls(None if data["pca"] is None else PCAReducer.from_dict(data["pca"]),
                   {k: list(v) for k, v in data["categories"].items()}, bool(data["probes"]))
        if pipe.columns != list(data["columns"]):
            raise ValueError("router artifact: its feature columns are not the ones this ttsopt computes "
                             f"({data['columns'][:5]}... vs {pipe.columns[:5]}...): retrain it")
        return pipe


__all__ = ["CATEGORICAL", "FeaturePipeline", "LABEL_COLUMNS", "LeakError", "ORACLE_COLUMNS", "PAIR_FEATURES",
           "PROBE_FEATURES", "STRATEGY_FEATURES", "check_inputs"]
