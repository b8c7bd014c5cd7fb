"""ProcessBench: how well a PRM finds the first wrong step of real solutions.

ProcessBench (Zheng et al., 2024) gives solutions written by 12 policies, split into
steps, with ``label`` = index of the first wrong step (-1 when every step is right).
A PRM predicts the first error as the first step scored below a threshold (-1 if
none). The benchmark reports accuracy on the erroneous solutions (predicted index ==
label), accuracy on the correct ones (nothing flagged) and their harmonic mean, F1.
Both parts matter: a PRM that flags nothing is perfect on correct solutions and
useless on erroneous ones.

The threshold matters a lot for an uncalibrated PRM such as an LLM judge, so the
result keeps every step score and ``threshold_sweep`` re-reads them at other
thresholds without scoring again; ``auc`` measures ranking quality free of any
threshold.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ttsopt.search.types import PRM


@dataclass(frozen=True)
class ProcessBenchExample:
    """One solution: ``label`` is the index of the first wrong step, -1 if all are right."""

    id: str
    problem: str
    steps: tuple[str, ...]
    label: int
    generator: str | None = None

    @property
    def erroneous(self) -> bool:
        return self.label >= 0


@dataclass
class ExamplePrediction:
    id: str
    label: int
    predicted: int
    scores: list[float]

    @property
    def correct(self) -> bool:
        return self.predicted == self.label


@dataclass
class ProcessBenchResult:
    """ProcessBench metrics at one threshold, with every step score kept.

    An accuracy over an empty subset (no correct or no erroneous solutions among the
    examples) is NaN, and so is F1 then: the benchmark needs both kinds.
    ``auc`` is the ROC AUC of step scores separating steps before the first error
    (all steps of correct solutions included) from the first wrong steps; ``None``
    when one of the two groups is empty.
    """

    prm: str
    threshold: float
    accuracy_erroneous: float
    accuracy_correct: float
    f1: float
    n_erroneous: int
    n_correct: int
    auc: float | None
    prm_tokens: int = 0
    wall_time_s: float = 0.0
    predictions: list[ExamplePrediction] = field(default_factory=list)

    def summary(self) -> dict:
        """Everything but the per-example predictions (for logs and JSON reports)."""
        d = asdict(self)
        d.pop("predictions")
        return d


@dataclass(frozen=True)
class ThresholdPoint:
    threshold: float
    accuracy_erroneous: float
    accuracy_correct: float
    f1: float


class ProcessBenchFormatError(ValueError):
    """A ProcessBench file is not in the expected shape; the message names the file and record."""


# ---- loading ----------------------------------------------------------------


def _parse_record(rec, path: Path, index: int) -> ProcessBenchExample:
    where = f"{path}: record {index}"
    if not isinstance(rec, dict):
        raise ProcessBenchFormatError(f"{where}: expected an object, got {type(rec).__name__}")
    if "id" in rec:
        where += f" (id {rec['id']!r})"
    for key in ("problem", "steps", "label"):
        if key not in rec:
            raise ProcessBenchFormatError(f"{where}: missing field {key!r}")
    problem, steps, label = rec["problem"], rec["steps"], rec["label"]
    if not isinstance(problem, str):
        raise ProcessBenchFormatError(f"{where}: 'problem' must be a string")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise ProcessBenchFormatError(f"{where}: 'steps' must be a non-empty list of strings")
    if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
        raise ProcessBenchFormatError(
            f"{where}: 'label' must be -1 or a step index below {len(steps)}, got {label!r}"
        )
    return ProcessBenchExample(
        id=str(rec.get("id", index)), problem=problem, steps=tuple(steps), label=label,
        generator=rec.get("generator"),
    )


def load_processbench(
    path: str | Path, limit: int | None = None, *, balanced: bool = True, seed: int = 0
) -> list[ProcessBenchExample]:
    """Read a ProcessBench split (a JSON list, or JSON lines).

    With ``limit``, a subset is taken: by default a seeded sample with as many correct
    as erroneous solutions (as far as each class allows), kept in file order, because
    the released files are sorted by class and their first hundred solutions are all
    erroneous. ``balanced=False`` takes the first ``limit`` records instead.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ProcessBenchFormatError(f"cannot read ProcessBench file {path}: {e}") from e
    try:
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ProcessBenchFormatError(f"{path} is neither a JSON list nor JSON lines: {e}") from e
    examples = [_parse_record(rec, path, i) for i, rec in enumerate(records)]
    if limit is None or limit >= len(examples):
        return examples
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if not balanced:
        return examples[:limit]
    return balanced_subset(examples, limit, seed=seed)


def balanced_subset(examples: Sequence[ProcessBenchExample], n: int, *, seed: int = 0) -> list[ProcessBenchExample]:
    """``n`` examples, half erroneous and half correct where possible, in their original order."""
    rng = random.Random(seed)
    wrong = [i for i, ex in enumerate(examples) if ex.erroneous]
    right = [i for i, ex in enumerate(examples) if not ex.erroneous]
    n_right = min(len(right), n // 2)
    n_wrong = min(len(wrong), n - n_right)
    n_right = min(len(right), n - n_wrong)
    chosen = rng.sample(wrong, n_wrong) + rng.sample(right, n_right)
    return [examples[i] for i in sorted(chosen)]


# ---- metrics ----------------------------------------------------------------


def first_error(scores: Sequence[float], threshold: float = 0.5) -> int:
    """Index of the first step scored below ``threshold``, -1 if none: ProcessBench's prediction rule."""
    for i, s in enumerate(scores):
        if s < threshold:
            return i
    return -1


def _accuracy(hits: Sequence[bool]) -> float:
    return sum(hits) / len(hits) if hits else math.nan


def harmonic_mean(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def processbench_metrics(labels: Sequence[int], predicted: Sequence[int]) -> tuple[float, float, float]:
    """(accuracy on erroneous, accuracy on correct, F1) for first-error predictions."""
    if len(labels) != len(predicted):
        raise ValueError(f"{len(labels)} labels but {len(predicted)} predictions")
    err = _accuracy([p == y for y, p in zip(labels, predicted) if y >= 0])
    cor = _accuracy([p == -1 for y, p in zip(labels, predicted) if y < 0])
    return err, cor, harmonic_mean(err, cor)


def first_error_auc(labels: Sequence[int], step_scores: Sequence[Sequence[float]]) -> float | None:
    """ROC AUC of step scores: steps before the first error (positive) vs the first wrong step.

    Steps after the first error are left out: ProcessBench does not say whether they are right.
    """
    y: list[int] = []
    s: list[float] = []
    for label, scores in zip(labels, step_scores):
        last = len(scores) if label < 0 else min(label, len(scores) - 1) + 1
        for i in range(last):
            y.append(0 if i == label else 1)
            s.append(scores[i])
    if len(set(y)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def threshold_sweep(
    result: ProcessBenchResult, thresholds: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
) -> list[ThresholdPoint]:
    """ProcessBench metrics at other thresholds, from the scores already in ``result``."""
    labels = [p.label for p in result.predictions]
    points = []
    for t in thresholds:
        predicted = [first_error(p.scores, t) for p in result.predictions]
        points.append(ThresholdPoint(t, *processbench_metrics(labels, predicted)))
    return points


def score_quantiles(result: ProcessBenchResult, n: int = 9) -> list[float]:
    """``n`` thresholds at evenly spaced quantiles of the step scores: a sweep grid that
    suits a PRM whose scores crowd into a narrow band (Gemma 3 270M as judge: 0.82-0.97)."""
    scores = sorted(s for p in result.predictions for s in p.scores)
    if not scores:
        return []
    return [scores[min(len(scores) - 1, round(q * (len(scores) - 1) / (n + 1)))] for q in range(1, n + 1)]


def best_threshold(points: Sequence[ThresholdPoint]) -> ThresholdPoint:
    """The sweep point with the highest F1 (an optimistic, in-sample figure: report it as such)."""
    scored = [p for p in points if not math.isnan(p.f1)]
    if not scored:
        raise ValueError("no threshold has a defined F1 (the examples lack correct or erroneous solutions)")
    return max(scored, key=lambda p: p.f1)


# ---- evaluation -------------------------------------------------------------


def evaluate_prm(
    prm: PRM,
    examples: Sequence[ProcessBenchExample],
    *,
    threshold: float = 0.5,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> ProcessBenchResult:
    """Score every step of every example with ``prm`` and compute ProcessBench metrics.

    ``batch_size`` examples go to ``prm.score`` per call (the PRM batches their steps
    itself); ``progress(done, total)`` is called after each call, for long runs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    predictions: list[ExamplePrediction] = []
    tokens = 0
    for lo in range(0, len(examples), batch_size):
        chunk = examples[lo:lo + batch_size]
        scored = prm.score([(ex.problem, list(ex.steps)) for ex in chunk])
        if len(scored) != len(chunk):
            raise RuntimeError(f"PRM {prm.name!r} returned {len(scored)} results for {len(chunk)} items")
        for ex, st in zip(chunk, scored):
            if len(st.scores) != len(ex.steps):
                raise RuntimeError(
                    f"PRM {prm.name!r} gave {len(st.scores)} scores for the {len(ex.steps)} steps of {ex.id}"
                )
            scores = [float(s) for s in st.scores]
            predictions.append(ExamplePrediction(ex.id, ex.label, first_error(scores, threshold), scores))
            tokens += st.tokens
        if progress is not None:
            progress(len(predictions), len(examples))
    labels = [p.label for p in predictions]
    err, cor, f1 = processbench_metrics(labels, [p.predicted for p in predictions])
    return ProcessBenchResult(
        prm=prm.name,
        threshold=threshold,
        accuracy_erroneous=err,
        accuracy_correct=cor,
        f1=f1,
        n_erroneous=sum(1 for y in labels if y >= 0),
        n_correct=sum(1 for y in labels if y < 0),
        auc=first_error_auc(labels, [p.scores for p in predictions]),
        prm_tokens=tokens,
        wall_time_s=time.perf_counter() - start,
        predictions=predictions,
    )


__all__ = [
    "ProcessBenchExample", "ExamplePrediction", "ProcessBenchResult", "ThresholdPoint", "ProcessBenchFormatError",
    "load_processbench", "balanced_subset", "first_error", "processbench_metrics", "first_error_auc",
    "harmonic_mean", "threshold_sweep", "score_quantiles", "best_threshold", "evaluate_prm",
]
