"""Problem sets from files, the built-in arithmetic set, or the Hugging Face hub.

Benchmarks arrive in a handful of schemas (MATH-500: ``problem``/``answer``/``unique_id``;
AIME24: ``problem``/``extracted_groundtruth``; GSM8K: ``question``/``answer`` ending in
``#### 42``). They all map onto :class:`Problem` here, and a bad row is refused with its
file and line rather than dropped: a silently shorter problem set would quietly change
every accuracy computed from it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qsl

from .arith import DEFAULT_PER_LEVEL, SOURCE as ARITH_SOURCE, arith_problems
from .problem import Problem, question_key

QUESTION_FIELDS = ("problem", "question", "Problem", "Question", "query")
# extracted_groundtruth first: AIME24 dumps carry it next to a looser ``answer``.
ANSWER_FIELDS = ("extracted_groundtruth", "answer", "final_answer", "Answer", "gold", "target")
ID_FIELDS = ("id", "unique_id", "problem_id", "question_id", "idx", "uid")
SOLUTION_FIELDS = ("solution",)

ACCEPTED_FORMS = (
    "a path to a .jsonl or .json file (a JSON list of objects)",
    "builtin:arith (options: builtin:arith?n=20&seed=3, or per_level=/seed= keywords)",
    "hf:NAME (a Hugging Face dataset, e.g. hf:HuggingFaceH4/MATH-500; options: split=, config=)",
)


class ProblemFileError(ValueError):
    """A problem source that cannot be read as given; the message starts with ``where:``."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


def load_problems(source: str, *, limit: int | None = None, seed: int = 0, **kw: Any) -> list[Problem]:
    """Problems from ``source``: a .jsonl/.json path, ``builtin:arith[?n=..&seed=..]`` or ``hf:NAME``.

    ``limit`` keeps the first K problems (as ``ttsopt run --limit`` promises); for a spread
    of the arithmetic set use ``per_level`` instead.
    Keywords: ``question_field``/``answer_field``/``id_field`` name the columns of a
    file or dataset explicitly; ``per_level`` (and ``levels``) shape the arithmetic set;
    ``split``/``config`` pick a hub dataset's split and configuration.
    """
    source = str(source)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if source == ARITH_SOURCE or source.startswith(ARITH_SOURCE + "?"):
        problems = _load_arith(source, seed=seed, **kw)
    elif source.startswith("hf:"):
        problems = _load_hub(source, **kw)
    elif source.startswith("builtin:"):
        raise ValueError(f"unknown built-in problem set {source!r}; accepted sources: " + "; ".join(ACCEPTED_FORMS))
    else:
        path = Path(source).expanduser()
        if path.suffix.lower() not in (".jsonl", ".json"):
            raise ValueError(f"cannot load problems from {source!r}; accepted sources: " + "; ".join(ACCEPTED_FORMS))
        if not path.is_file():
            raise FileNotFoundError(f"problem file not found: {source}")
        problems = _load_file(path, **kw)
    return problems if limit is None else problems[:limit]


def _split_options(source: str) -> tuple[str, dict[str, str]]:
    name, _, query = source.partition("?")
    return name, dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))


def _int_option(options: dict[str, Any], key: str, where: str) -> int | None:
    if key not in options:
        return None
    try:
        return int(options[key])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: option {key}={options[key]!r} is not an integer") from None


def _load_arith(source: str, *, seed: int, per_level: int | None = None, levels: Iterable[int] | None = None,
                exclude: str | Iterable[str] | None = None, **unexpected: Any) -> list[Problem]:
    """``exclude``: a problem source (any form ``load_problems`` takes) or question texts whose
    questions this set must not contain (a training set disjoint from an evaluation set)."""
    if unexpected:
        raise TypeError(f"{ARITH_SOURCE} takes per_level=, seed=, levels=, exclude=; not {sorted(unexpected)}")
    _, options = _split_options(source)
    extra = set(options) - {"n", "per_level", "seed", "levels"}
    if extra:
        raise ValueError(f"{source}: unknown option(s) {sorted(extra)}; use n=, seed=, levels=")
    n = _int_option(options, "n", source)
    if n is None:
        n = _int_option(options, "per_level", source)
    n = per_level if per_level is not None else n
    seed_opt = _int_option(options, "seed", source)
    gen_seed = seed_opt if seed_opt is not None else seed
    if levels is None and options.get("levels"):
        levels = [int(x) for x in options["levels"].split(",")]
    return arith_problems(
        per_level=DEFAULT_PER_LEVEL if n is None else n,
        seed=gen_seed,
        levels=None if levels is None else tuple(levels),
        exclude=_excluded_keys(exclude),
    )


def _excluded_keys(exclude: str | Iterable[str] | None) -> frozenset[str]:
    if exclude is None:
        return frozenset()
    if isinstance(exclude, str):
        return frozenset(p.key for p in load_problems(exclude))
    return frozenset(question_key(q) for q in exclude)


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def _load_file(path: Path, *, question_field: str | None = None, answer_field: str | None = None,
               id_field: str | None = None, **unexpected: Any) -> list[Problem]:
    if unexpected:
        raise TypeError(f"a problem file takes question_field=, answer_field=, id_field=; not {sorted(unexpected)}")
    rows = _jsonl_rows(path) if path.suffix.lower() == ".jsonl" else _json_rows(path)
    return _to_problems(rows, source=str(path), stem=path.stem,
                        fields=(question_field, answer_field, id_field))


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise ProblemFileError(where, f"invalid JSON: {e.msg} (column {e.colno})") from None


def _json_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ProblemFileError(f"{path}:{e.lineno}", f"invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(data, list):
        raise ProblemFileError(str(path), f"expected a JSON list of problem objects, found {type(data).__name__}")
    for index, row in enumerate(data):
        yield f"{path}: item {index}", row


# ---------------------------------------------------------------------------------------
# Rows -> problems (shared by files and the hub)
# ---------------------------------------------------------------------------------------


def _to_problems(rows: Iterable[tuple[str, Any]], *, source: str, stem: str,
                 fields: tuple[str | None, str | None, str | None]) -> list[Problem]:
    problems: list[Problem] = []
    first_seen: dict[str, str] = {}
    for index, (where, row) in enumerate(rows):
        problem = _row_to_problem(row, where=where, index=index, source=source, stem=stem, fields=fields)
        if problem.id in first_seen:
            raise ProblemFileError(where, f"duplicate id {problem.id!r} (first at {first_seen[problem.id]})")
        first_seen[problem.id] = where
        problems.append(problem)
    return problems


def _pick(row: dict[str, Any], explicit: str | None, candidates: tuple[str, ...], where: str, what: str) -> str | None:
    """The field to read: the explicit one (which must exist) or the first present candidate."""
    if explicit is not None:
        if explicit not in row:
            raise ProblemFileError(where, f"no {what} field {explicit!r} (fields: {sorted(row)})")
        return explicit
    return next((f for f in candidates if row.get(f) not in (None, "")), None)


def _answer_text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ProblemFileError(where, f"answer must be a string or a number, found {type(value).__name__}: {value!r:.60}")
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    if "####" in text:  # GSM8K: worked solution, then "#### 42"
        text = text.rsplit("####", 1)[1].strip()
    return text


def _level(value: Any) -> Any:
    """MATH's "Level 3" -> 3; anything else unchanged."""
    if isinstance(value, str) and (m := re.fullmatch(r"\s*(?:level\s*)?(\d+)\s*", value, re.IGNORECASE)):
        return int(m.group(1))
    return value


def _row_to_problem(row: Any, *, where: str, index: int, source: str, stem: str,
                    fields: tuple[str | None, str | None, str | None]) -> Problem:
    if not isinstance(row, dict):
        raise ProblemFileError(where, f"expected a JSON object, found {type(row).__name__}")
    question_field, answer_field, id_field = fields
    q_key = _pick(row, question_field, QUESTION_FIELDS, where, "question")
    if q_key is None or not isinstance(row[q_key], str) or not row[q_key].strip():
        raise ProblemFileError(where, f"no question (looked for {list(QUESTION_FIELDS)}; fields: {sorted(row)})")
    a_key = _pick(row, answer_field, ANSWER_FIELDS, where, "answer")
    metadata: dict[str, Any] = {}
    if a_key is not None and row[a_key] not in (None, ""):
        answer = _answer_text(row[a_key], where)
    else:
        answer = _answer_from_solution(row) if answer_field is None else ""
        if answer:
            metadata["answer_from"] = "solution"
    if not answer:
        raise ProblemFileError(where, f"no answer (looked for {list(ANSWER_FIELDS)} and a \\boxed{{}} "
                                      f"in {list(SOLUTION_FIELDS)}; fields: {sorted(row)})")
    i_key = _pick(row, id_field, ID_FIELDS, where, "id")
    problem_id = str(row[i_key]).strip() if i_key is not None else f"{stem}-{index:04d}"
    if not problem_id:
        raise ProblemFileError(where, "empty id")
    used = {q_key, a_key, i_key}
    for key, value in row.items():
        if key not in used:
            metadata[key] = _level(value) if key == "level" else value
    return Problem(id=problem_id, question=row[q_key].strip(), answer=answer, source=source, metadata=metadata)


def _answer_from_solution(row: dict[str, Any]) -> str:
    """MATH as released has no answer column: its answer is the solution's last \\boxed{}."""
    from .grading import _last_boxed

    for key in SOLUTION_FIELDS:
        if isinstance(row.get(key), str):
            boxed = _last_boxed(row[key])
            if boxed:
                return boxed
    return ""


# ---------------------------------------------------------------------------------------
# Hugging Face hub
# ---------------------------------------------------------------------------------------


def _load_hub(source: str, *, split: str | None = None, config: str | None = None,
              question_field: str | None = None, answer_field: str | None = None, id_field: str | None = None,
              **unexpected: Any) -> list[Problem]:
    if unexpected:
        raise TypeError(f"hf: sources take split=, config=, question_field=, answer_field=, id_field=; "
                        f"not {sorted(unexpected)}")
    name, options = _split_options(source[len("hf:"):])
    if not name:
        raise ValueError("hf: needs a dataset name, e.g. hf:HuggingFaceH4/MATH-500")
    extra = set(options) - {"split", "config"}
    if extra:
        raise ValueError(f"{source}: unknown option(s) {sorted(extra)}; use split=, config=")
    split = split or options.get("split")
    config = config or options.get("config")
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"loading {source} needs the Hugging Face `datasets` package: pip install 'ttsopt[datasets]'"
        ) from None
    args = (name, config) if config else (name,)
    loaded = datasets.load_dataset(*args, split=split) if split else datasets.load_dataset(*args)
    if hasattr(loaded, "keys"):  # a DatasetDict: choose the split
        splits = list(loaded.keys())
        if split is None:
            if len(splits) == 1:
                split = splits[0]
            elif "test" in splits:
                split = "test"
            else:
                raise ValueError(f"{source} has splits {splits}; pick one with split=")
        if split not in splits:
            raise ValueError(f"{source} has no split {split!r}; splits: {splits}")
        loaded = loaded[split]
    label = f"hf:{name}" + (f"[{split}]" if split else "")
    rows = ((f"{label}: row {i}", dict(row)) for i, row in enumerate(loaded))
    stem = name.rsplit("/", 1)[-1]
    return _to_problems(rows, source=f"hf:{name}", stem=stem, fields=(question_field, answer_field, id_field))
