"""A tiny real router for tests: trained in seconds on a synthetic table, with scripted models injected.

``tiny_router(tmp_path)`` returns a :class:`~ttsopt.selector.router.Router` over an artifact written
by the real training code (``train/fit/build.py`` ``write_router`` with ``train/fit/tuning.py`` ``fit_fixed``:
the LightGBM fit and the artifact, without the Optuna study's seconds) on a
table built by the functions the router itself uses (``selector/rows.py``, ``selector/probe.py``),
with a deterministic scripted policy, the calculator PRM and a hash-based fake encoder injected:
no model is loaded, nothing is downloaded. The artifact is built once per process and copied.

The scripted policy answers ``What is A + B?`` / ``What is A * B?`` / ``What is A + B * C?``
questions; sample i of a call is right with a probability set by the question's length (seeded by
call seed, row and prompt), a wrong one states a wrong equation (which the calculator PRM flags).
In step mode (a tree search) it writes the equation as one step, then the answer.

Tests run under ``--import-mode=importlib``, where test files cannot import each other by name;
``tests/conftest.py`` puts this folder on ``sys.path``, so a test imports this module by name
(``import router_fixtures as rf``): one module per process, so the built artifact is shared.

``tiny_router(tmp_path, probe=True)``: with a live k=2 probe (the scripted policy and calc PRM are
called on every route); ``probe=False``: text and embedding only. Keyword options go to
``Router.load`` (``policy=``, ``prm=``, ``encoder=`` override the injected ones).
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ttsopt.search import Completion, Generation

POLICY_PARAMS = 1_000_000
PROBE_K = 2
PROBE_SEED = 7
STRATEGIES = ("cot", "majority:n=1", "majority:n=2", "majority:n=4", "best_of_n:n=4,agg=min,vote=prm_vote",
              "beam:n=4,m=2,agg=last,vote=prm_vote,depth=3")
SEARCH = {"engine": "transformers", "device": "cpu", "temperature": 0.7, "max_tokens": 64, "step_max_tokens": 32,
          "max_depth": 3}
EMB_DIM = 16
FIT_PARAMS = {"learning_rate": 0.1, "num_leaves": 8, "min_data_in_leaf": 5, "lambda_l2": 1e-3}
FIT_ROUNDS = 60

_Q = re.compile(r"What is (\d+) ([+*]) (\d+)(?: ([+*]) (\d+))?\?")


def questions(count: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
        out.append([f"What is {a} + {b}?", f"What is {a} * {b}?", f"What is {a} + {b} * {c}?"][i % 3])
    return out


def solve_text(question: str) -> tuple[str, int]:
    """(the equation a right solution states, its result)."""
    m = _Q.search(question)
    if m is None:
        return "1 + 1 = 2", 2
    a, op, b, op2, c = m.groups()
    if op2 is None:
        value = int(a) + int(b) if op == "+" else int(a) * int(b)
        return f"{a} {op} {b} = {value}", value
    value = int(a) + int(b) * int(c)  # only "A + B * C" is generated
    return f"{b} * {c} = {int(b) * int(c)}\n\n{a} + {int(b) * int(c)} = {value}", value


def p_right(question: str) -> float:
    """How often the scripted policy is right: sums 0.85, products 0.5, a sum with a product 0.25."""
    if "*" not in question:
        return 0.85
    return 0.25 if "+" in question else 0.5


class ScriptedPolicy:
    """Deterministic given (seed, row, prompt); see the module docstring."""

    name = "scripted"
    num_parameters = POLICY_PARAMS

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], object]] = []

    def format_prompt(self, question: str) -> str:
        return f"Q: {question}\nA: "

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params))
        out = []
        for row, prompt in enumerate(prompts):
            question, _, prefix = prompt.partition("\nA: ")
            question = question[len("Q: "):]
            equation, value = solve_text(question)
            rng = random.Random(f"{params.seed}:{row}:{prompt}")
            comps = []
            for _ in range(params.n):
                right = params.temperature == 0 and p_right(question) >= 0.5 or rng.random() < p_right(question)
                wrong = value + rng.randint(1, 3)
                eq = equation if right else equation.rsplit("= ", 1)[0] + f"= {wrong}"
                answer = value if right else wrong
                if params.stop and not prefix:
                    text, finish = f"{eq}\n\n", "stop"
                elif params.stop:
                    text, finish = f"The answer is {answer}.", "eos"
                else:
                    text, finish = f"{eq}\n\nThe answer is {answer}.", "eos"
                tokens = len(text.split())
                comps.append(Completion(text, tokens, finish, logprob=-0.1 * tokens))
            out.append(Generation(prompt_tokens=len(prompt.split()), completions=comps))
        return out


def fake_encoder(texts):
    """A deterministic 16-d unit vector per text (BLAKE2b of it): stands in for MiniLM."""
    out = []
    for t in texts:
        raw = np.frombuffer(hashlib.blake2b(t.encode(), digest_size=EMB_DIM).digest(), dtype=np.uint8)
        v = raw.astype(np.float64) - 127.5
        out.append(v / np.linalg.norm(v))
    return np.array(out, dtype=np.float32)


def question_level(question: str) -> str:
    """The synthetic questions' level: "1" for one operation (a sum or a product), "2" for a sum with a
    product; the text statistics tell them apart (they count the operators)."""
    return "2" if "+" in question and "*" in question else "1"


def synthetic_table(probe: bool = True, count: int = 40, levels: bool = False):
    """A training table of the offline table's shape: one row per (pair, question, strategy); with
    ``levels``, an oracle ``level`` column (:func:`question_level`) as a problem set's generator gives it."""
    import pandas as pd

    from ttsopt.data.problem import question_key
    from ttsopt.search.registry import load_prm
    from ttsopt.search.strategy import Strategy
    from ttsopt.selector.features import Embedder
    from ttsopt.selector.probe import probe_row, probe_seed, sample_probe, score_probe
    from ttsopt.selector.rows import pair_columns, question_columns, strategy_columns

    qs = questions(count)
    base = question_columns(qs, Embedder(fake_encoder, "fake"))
    base["question_key"] = [question_key(q) for q in qs]
    base["problem_id"] = [f"q{i}" for i in range(len(qs))]
    if probe:
        policy, prm = ScriptedPolicy(), load_prm("calc")
        drawn = score_probe(prm, qs, sample_probe(policy, qs, PROBE_K, temperature=SEARCH["temperature"],
                                                  max_tokens=SEARCH["max_tokens"],
                                                  seed=probe_seed(0, PROBE_SEED, 0)))
        probes = pd.DataFrame([probe_row(p, PROBE_K) for p in drawn]).drop(columns=["probe_k"])
        base = pd.concat([base, probes], axis=1)
    pair = {"policy": "scripted", "prm": "calc", "policy_params": POLICY_PARAMS, "prm_params": 0,
            **pair_columns("scripted", "calc", POLICY_PARAMS, 0)}
    strat = strategy_columns(list(STRATEGIES))
    rows = base.merge(strat, how="cross")
    for k, v in pair.items():
        rows[k] = v
    rows["strategy"] = rows["strategy"].astype(str)
    rows["n"] = rows["strategy_n"]
    p = np.array([p_right(q) for q in qs])[np.repeat(np.arange(len(qs)), len(STRATEGIES))]
    n = rows["n"].to_numpy()
    method = rows["strategy"].map(lambda k: Strategy.from_key(k).method).to_numpy()
    # more samples help where the policy is right more often than not, and hurt where it is not
    gain = np.where(method == "cot", 0.05, 0.12 * np.log2(n)) * (2 * p - 1)
    rows["label"] = np.clip(p + gain + np.where(method == "beam", 0.1, 0.0), 0.0, 1.0)
    rows["policy_prompt_tokens"] = 6.0
    rows["policy_generated_tokens"] = 9.0 * n * np.where(method == "beam", 1.5, 1.0)
    rows["prm_tokens"] = np.where(np.isin(method, ["best_of_n", "beam"]), 4.0 * n, 0.0)
    rows["tokens"] = rows["policy_prompt_tokens"] + rows["policy_generated_tokens"] + rows["prm_tokens"]
    rows["policy_flops"] = 2.0 * POLICY_PARAMS * (rows["policy_prompt_tokens"] + rows["policy_generated_tokens"])
    rows["prm_flops"] = 0.0
    rows["flops"] = rows["policy_flops"]
    rows["snapshot"] = "synthetic"
    if levels:
        rows["level"] = [question_level(q) for q in np.array(qs)[np.repeat(np.arange(len(qs)), len(STRATEGIES))]]
    return rows


def synthetic_gates(count: int = 40):
    """The calculator PRM's lowest step score on the scripted policy's greedy CoT of each synthetic
    question (what ``train/fit/cascade.py`` reads from a snapshot's stored CoTs)."""
    import pandas as pd

    from ttsopt.search import SamplingParams
    from ttsopt.search.registry import load_prm
    from ttsopt.search.types import split_steps

    policy, prm = ScriptedPolicy(), load_prm("calc")
    qs = questions(count)
    gens = policy.generate([policy.format_prompt(q) for q in qs], SamplingParams(n=1, temperature=0.0,
                                                                                  max_tokens=64, seed=0))
    scored = prm.score([(q, split_steps(g.completions[0].text)) for q, g in zip(qs, gens)])
    return pd.DataFrame({"policy": "scripted", "prm": "calc", "problem_id": [f"q{i}" for i in range(len(qs))],
                         "gate": [min(s.scores) for s in scored], "gate_prm_tokens": [float(s.tokens) for s in scored],
                         "gate_prm_flops": 0.0, "prompt_tokens": 6.0})


def search_settings(probe: bool = True) -> dict:
    return {"scripted+calc": {**SEARCH, "probe": {"k": PROBE_K, "sweep_k": PROBE_K, "seed": PROBE_SEED} if probe
                              else None,
                              "models": {"policy": {"name": "scripted", "num_parameters": POLICY_PARAMS},
                                         "prm": {"name": "calc", "num_parameters": 0}},
                              "snapshots": []}}


_BUILT: dict[tuple[bool, bool], Path] = {}


def tiny_artifact(probe: bool = True, levels: bool = False) -> Path:
    """The tiny router directory (built once per process, in a temporary folder); ``levels``: trained
    on a table with levels, so it carries a level model and level plans."""
    if (probe, levels) not in _BUILT:
        from ttsopt.train.fit.build import write_router
        from ttsopt.train.fit.tuning import TrainSettings, fit_fixed

        name = ("tiny" if probe else "tiny-noprobe") + ("-levels" if levels else "")
        out = Path(tempfile.mkdtemp(prefix="ttsopt-tiny-router-")) / name
        settings = TrainSettings(trials=0, folds=3, n_components=2, probe_k=PROBE_K if probe else None)
        count = 60 if levels else 40  # with levels: 40 and 20, enough for the level plan to be the default
        table = synthetic_table(probe, count=count, levels=levels)
        fit = fit_fixed(table, settings, FIT_PARAMS, FIT_ROUNDS)  # the real fit, without the tuning's seconds
        write_router(table, out, settings, search=search_settings(probe), fit=fit,
                     storage=f"sqlite:///{out.parent / 'study.sqlite3'}", gates=synthetic_gates(count))
        _BUILT[probe, levels] = out
    return _BUILT[probe, levels]


def tiny_router(tmp_path, *, probe: bool = True, name: str = "tiny", levels: bool = False, **options):
    """A Router over a copy of the tiny artifact in ``tmp_path / name``, with the scripted policy, the
    calculator PRM and the fake encoder injected (``options`` go to ``Router.load``)."""
    from ttsopt.search.registry import load_prm
    from ttsopt.selector.router import Router

    target = Path(tmp_path) / name
    if not target.exists():
        shutil.copytree(tiny_artifact(probe, levels), target)
    models = {"policy": ScriptedPolicy(), "prm": load_prm("calc"), "encoder": fake_encoder}
    return Router.load(target, **{**models, **options})


__all__ = ["PROBE_K", "ScriptedPolicy", "STRATEGIES", "fake_encoder", "question_level", "questions", "search_settings",
           "synthetic_gates", "synthetic_table", "tiny_artifact", "tiny_router"]
