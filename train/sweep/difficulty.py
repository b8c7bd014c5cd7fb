"""Difficulty labels: the policy's Pass@1 on a problem, cut into the paper's absolute bins.

The paper (arXiv 2502.06703) labels a problem by how often the
policy itself solves it, not by a dataset's human levels, and uses absolute thresholds —
easy 50–100%, medium 10–50%, hard 0–10% — because quantile bins put problems the
policy never solves next to ones it sometimes does. Difficulty is therefore a property
of a (policy, problem) pair: the same question is easy for one model and hard for another.

Boundaries (the paper leaves them open; these are ours): a bin includes its lower edge,
so ``hard = p < 0.1``, ``medium = 0.1 <= p < 0.5``, ``easy = p >= 0.5``. Exactly one
correct sample in ten is medium; exactly half correct is easy. A Pass@1 within 1e-9 of an
edge counts as on it, so an average that lands on ``0.09999999999999999`` by rounding is
not pushed into the bin below.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:  # pandas is imported only by label_difficulty
    import pandas as pd

#: Tolerance for a Pass@1 that is an edge up to floating-point rounding.
EDGE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class DifficultyBin:
    """One bin: ``low <= pass@1 < high`` (the top bin also includes ``high`` = 1)."""

    name: str
    low: float
    high: float

    def contains(self, p: float) -> bool:
        if self.high >= 1.0:
            return p >= self.low - EDGE_TOLERANCE
        return self.low - EDGE_TOLERANCE <= p < self.high - EDGE_TOLERANCE


#: The paper's absolute bins, from easiest to hardest.
DIFFICULTY_BINS: tuple[DifficultyBin, ...] = (
    DifficultyBin("easy", 0.5, 1.0),
    DifficultyBin("medium", 0.1, 0.5),
    DifficultyBin("hard", 0.0, 0.1),
)
#: Bin names, easiest first (an order for tables and ordered categoricals).
DIFFICULTY_LEVELS: tuple[str, ...] = tuple(b.name for b in DIFFICULTY_BINS)


def difficulty_bin(pass_at_1: float) -> str:
    """``"easy"``, ``"medium"`` or ``"hard"`` for a Pass@1 in [0, 1]."""
    p = _probability(pass_at_1)
    for b in DIFFICULTY_BINS:
        if b.contains(p):
            return b.name
    raise AssertionError(f"no difficulty bin for {p}")  # the bins cover [0, 1]


def _probability(value: float) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"pass@1 must be a number in [0, 1], got {value!r}") from None
    if math.isnan(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"pass@1 must be in [0, 1], got {value!r}")
    return p


def pass_at_1(correct: Sequence[bool] | Iterable[bool]) -> float:
    """The share of correct samples: the unbiased Pass@1 estimate from independent samples.

    Accepts bools or 0/1 numbers; anything else (None, NaN, 0.5) is refused, because a
    sample whose grading failed is not a wrong sample and must not be counted as one.
    """
    values = list(correct)
    if not values:
        raise ValueError("pass@1 of zero samples is undefined")
    return sum(_as_bool(v) for v in values) / len(values)


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
        if isinstance(value, bool):
            return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"a correctness flag must be True/False (or 0/1), got {value!r}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k (any@k) from ``c`` correct among ``n`` samples: ``1 - C(n-c, k) / C(n, k)``.

    The chance that k samples drawn without replacement from the n include a correct
    one — the estimator of Chen et al. (2021), which is unbiased where ``1 - (1-c/n)^k``
    is not. Exact integer binomials, so large n lose no precision.
    """
    n, c, k = (_integer(v, name) for name, v in (("n", n), ("c", c), ("k", k)))
    if n < 1:
        raise ValueError(f"pass_at_k: need at least one sample, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c must be in [0, n={n}], got c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must be in [1, n={n}], got k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    if k == 1:
        return c / n  # the same value, without 1 - (n-c)/n's rounding (0.1 stays 0.1)
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _integer(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"pass_at_k: {name} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # int and numpy integers; not 3.0
    except TypeError:
        raise TypeError(f"pass_at_k: {name} must be an integer, got {value!r}") from None


def label_difficulty(
    df: "pd.DataFrame",
    *,
    by: Sequence[str] = ("policy", "problem_id"),
    correct_col: str = "correct",
    ks: Sequence[int] = (),
) -> "pd.DataFrame":
    """Pass@1 and difficulty bin per group (by default per (policy, problem)).

    ``df`` holds one row per independent sample of the policy (for example the sweep's
    sampling pool), not one row per strategy outcome: a majority vote's answer is not a
    Pass@1 sample. Returns one row per group with the ``by`` columns, ``n_samples``,
    ``n_correct``, ``pass_at_1``, ``difficulty`` and, for every k > 1 in ``ks``, ``pass_at_{k}``
    (NaN for a group with fewer than k samples).
    """
    import pandas as pd

    by = [by] if isinstance(by, str) else list(by)
    if not by:
        raise ValueError("label_difficulty: `by` needs at least one column")
    missing = [c for c in [*by, correct_col] if c not in df.columns]
    if missing:
        raise KeyError(f"label_difficulty: missing column(s) {missing}; columns are {list(df.columns)}")
    bad_ks = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if bad_ks:
        raise ValueError(f"label_difficulty: ks must be positive integers, got {bad_ks}")
    flags = df[correct_col]
    if flags.isna().any():
        where = df.loc[flags.isna(), by].head(3).to_dict("records")
        raise ValueError(f"label_difficulty: {int(flags.isna().sum())} sample(s) have no {correct_col!r} "
                         f"value (e.g. {where}); grade or drop them first")
    bad = ~flags.isin([True, False])  # 0/1 compare equal to False/True
    if bad.any():
        raise ValueError(f"label_difficulty: {correct_col!r} must be True/False (or 0/1), found "
                         f"{sorted(map(repr, set(flags[bad].tolist())))[:5]}")
    key_na = df[by].isna().any(axis=1)
    if key_na.any():
        raise ValueError(f"label_difficulty: {int(key_na.sum())} row(s) have a missing {by} value")

    grouped = flags.astype(bool).groupby([df[c] for c in by], sort=True, observed=True)
    out = pd.DataFrame({"n_samples": grouped.size(), "n_correct": grouped.sum()}).reset_index()
    out["n_samples"] = out["n_samples"].astype("int64")
    out["n_correct"] = out["n_correct"].astype("int64")
    out["pass_at_1"] = out["n_correct"] / out["n_samples"]
    out["difficulty"] = [difficulty_bin(p) for p in out["pass_at_1"]]
    for k in dict.fromkeys(k for k in ks if k > 1):
        out[f"pass_at_{k}"] = [
            pass_at_k(n, c, k) if n >= k else math.nan for n, c in zip(out["n_samples"], out["n_correct"])
        ]
    return out


__all__ = [
    "DIFFICULTY_BINS", "DIFFICULTY_LEVELS", "DifficultyBin", "difficulty_bin", "label_difficulty",
    "pass_at_1", "pass_at_k",
]
