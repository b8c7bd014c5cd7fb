"""Adaptive strategies (issue #26): majority with early stopping and Best-of-N with a verified stop.

Online (search/methods/adaptive.py) they are driven by a scripted policy that hands out each
question's pool in order, round after round, and a PRM that gives each candidate the step scores
scripted for it; token counts are whitespace words, so every charge can be checked by hand. Offline
(train/fit/adaptive.py) the same pools are stored, and the estimate must be the mean of the online
runs over every order of the pool.
"""

from __future__ import annotations

import itertools
import random

import pytest

from ttsopt.data import Problem
from ttsopt.search import Completion, Generation, StepScores, Strategy, run_search

POLICY_PARAMS = 1000
PRM_PARAMS = 10


def words(text: str) -> int:
    return len(text.split())


def letters(i: int) -> str:
    """``i`` written in letters (a, b, ..., ba, ...): tags without digits, which answer extraction would read."""
    out = ""
    while True:
        i, r = divmod(i, 26)
        out = "abcdefghijklmnopqrstuvwxyz"[r] + out
        if not i:
            return out


def solution(tag: str, answer: str | None, steps: int = 2) -> str:
    """A solution of ``steps`` steps whose last states ``answer`` (or nothing); ``tag`` (no digits) makes it unique."""
    body = [f"{tag} step {letters(j)} adds things up\n\n" for j in range(steps - 1)]
    return "".join(body) + (f"{tag} The answer is {answer}." if answer is not None else f"{tag} no idea.")


class PoolPolicy:
    """Each question's pool, handed out in order: a call with n samples gets the next n (the seed is ignored).

    ``pools[question]`` is a list of solution texts; ``calls`` records (questions, n) per call.
    """

    name = "pool"
    num_parameters = POLICY_PARAMS

    def __init__(self, pools: dict[str, list[str]]):
        self.pools = pools
        self.cursor = {q: 0 for q in pools}
        self.calls: list[tuple[list[str], int]] = []

    def format_prompt(self, question: str) -> str:
        return f"Q: {question}\nA: "

    def generate(self, prompts, params):
        questions = [p[len("Q: "):].split("\n")[0] for p in prompts]
        self.calls.append((questions, params.n))
        gens = []
        for prompt, q in zip(prompts, questions):
            start = self.cursor[q]
            texts = self.pools[q][start:start + params.n]
            assert len(texts) == params.n, f"{q}: drew past the end of the pool"
            self.cursor[q] = start + params.n
            gens.append(Generation(prompt_tokens=words(prompt),
                                   completions=[Completion(t, words(t), "eos") for t in texts]))
        return gens


class PoolPRM:
    """The step scores scripted for each solution text (``scores[text]``); one token per step plus one."""

    name = "pool-prm"
    num_parameters = PRM_PARAMS

    def __init__(self, scores: dict[str, list[float]]):
        self.scores = scores
        self.calls: list[int] = []

    def score(self, items):
        self.calls.append(len(items))
        out = []
        for _, steps in items:
            s = self.scores["".join(steps)]
            assert len(s) == len(steps)
            out.append(StepScores(list(s), tokens=len(steps) + 1))
        return out


def pool_of(answers, scores=None, tag="c"):
    """Texts for ``answers`` (None: no answer) and their scripted step scores (default 0.5 per step)."""
    texts = [solution(f"{tag}{letters(i)}", a) for i, a in enumerate(answers)]
    table = {t: list(scores[i]) if scores else [0.5, 0.5] for i, t in enumerate(texts)}
    return texts, table


def run_one(strategy, texts, table=None, question="q", gold="5", **kw):
    policy = PoolPolicy({question: texts})
    prm = PoolPRM(table or {})
    [result] = run_search([Problem("p", question, gold)], strategy, policy, prm, **kw)
    return result, policy, prm


# -- the strategies' keys ----------------------------------------------------------------------------

def test_adaptive_keys_are_stable_and_normalised():
    s = Strategy("majority_stop", n=16, stop_votes=3, give_up_after=6)
    assert s.key == "majority_stop:n=16,r=1,k=3,s=1,j=6,kg=2"
    assert Strategy.from_key(s.key) == s and s.adaptive and not s.uses_prm
    v = Strategy("bon_verified", n=8, tau=0.95, agg="last", vote="majority", stop_votes=9)
    assert v.key == "bon_verified:n=8,r=1,tau=0.95" and (v.agg, v.vote) == ("min", "prm_vote") and v.uses_prm
    assert Strategy.from_key(v.key) == v
    # fields that do not apply are normalised away: two spellings share one key
    assert Strategy("majority_stop", n=4, round_size=8, give_up_after=9, give_up_votes=3).key == \
        "majority_stop:n=4,r=4,k=3,s=1,j=0,kg=2"
    assert Strategy("majority", n=4, round_size=2, tau=0.5) == Strategy("majority", n=4)
    assert Strategy.from_key("majority_stop:n=8,r=2,k=2,s=0.75,j=6,kg=2").stop_share == 0.75
    for bad in ({"stop_share": 0.0}, {"stop_share": 1.5}, {"round_size": 0}, {"give_up_after": -1},
                {"stop_votes": 0}, {"tau": 1.2}):
        with pytest.raises(ValueError):
            Strategy("majority_stop" if "tau" not in bad else "bon_verified", n=4, **bad)


def test_bon_verified_needs_a_prm():
    with pytest.raises(ValueError, match="prm="):
        run_search([Problem("p", "q", "5")], "bon_verified:n=4,r=1,tau=0.95", PoolPolicy({"q": []}))


# -- each stop reason on a scripted pool ----------------------------------------------------------

def test_majority_stop_agrees_as_soon_as_k_samples_agree():
    texts, _ = pool_of(["5", "5", "5", "7", "7", "7", "7", "7"])
    r, policy, _ = run_one("majority_stop:n=8,r=1,k=3,s=1,j=0,kg=2", texts)
    assert r.trace["stop"] == "agree" and r.trace["drawn"] == 3 == len(r.candidates) and r.trace["rounds"] == 3
    assert r.answer == "5" and r.correct and [n for _, n in policy.calls] == [1, 1, 1]


def test_a_share_below_s_keeps_drawing():
    texts, _ = pool_of(["5", "7", "5", "5", "7", "7", "7", "7"])
    r, *_ = run_one("majority_stop:n=8,r=1,k=3,s=1,j=0,kg=2", texts)  # never unanimous
    assert r.trace["stop"] == "budget" and r.trace["drawn"] == 8 and r.answer == "7"
    r, *_ = run_one("majority_stop:n=8,r=1,k=3,s=0.75,j=0,kg=2", texts)  # 3 of 4 at the 4th sample
    assert r.trace["stop"] == "agree" and r.trace["drawn"] == 4 and r.answer == "5"


def test_majority_stop_gives_up_when_nothing_repeats():
    texts, _ = pool_of(["1", "2", None, "3", "4", "6", "5", "5"])
    r, *_ = run_one("majority_stop:n=8,r=1,k=3,s=1,j=6,kg=2", texts)
    assert r.trace["stop"] == "give_up" and r.trace["drawn"] == 6 and r.answer == "1"  # plurality: first seen
    assert r.trace["tally"] == {"1": 1, "2": 1, "3": 1, "4": 1, "6": 1}
    # one repeat within the first j keeps it drawing
    texts, _ = pool_of(["1", "2", "1", "3", "4", "6", "5", "5"])
    r, *_ = run_one("majority_stop:n=8,r=1,k=3,s=1,j=6,kg=2", texts)
    assert r.trace["stop"] == "budget" and r.trace["drawn"] == 8 and r.answer == "1"


def test_bon_verified_stops_at_the_first_verified_candidate_with_an_answer():
    answers = ["7", None, "5", "7", "7"]
    scores = [[0.95, 0.5], [0.95, 0.95], [0.95, 0.95], [0.95, 0.95], [0.5, 0.5]]
    texts, table = pool_of(answers, scores)
    r, policy, prm = run_one("bon_verified:n=5,r=1,tau=0.95", texts, table)
    # candidate 1 checks everywhere but states no answer; candidate 2 is the first verified one
    assert r.trace["stop"] == "verified" and r.trace["drawn"] == 3 and r.trace["winner"] == 2
    assert r.answer == "5" and r.correct and prm.calls == [1, 1, 1]


def test_bon_verified_without_a_verified_candidate_prm_votes_everything_drawn():
    answers = ["7", "5", "5", "7"]
    scores = [[0.95, 0.5], [0.5, 0.5], [0.5, 0.05], [0.95, 0.5]]
    texts, table = pool_of(answers, scores)
    r, *_ = run_one("bon_verified:n=4,r=2,tau=0.95", texts, table)
    assert r.trace["stop"] == "budget" and r.trace["drawn"] == 4 and r.trace["rounds"] == 2
    assert r.trace["tally"] == pytest.approx({"7": 1.0, "5": 0.55}) and r.answer == "7" and not r.correct


def test_the_rest_of_the_stopping_round_is_drawn_and_charged():
    answers = ["5", "7", "7", "7", "7", "7"]
    scores = [[0.95, 0.95]] + [[0.5, 0.5]] * 5
    texts, table = pool_of(answers, scores)
    r, policy, prm = run_one("bon_verified:n=6,r=4,tau=0.95", texts, table)
    assert r.trace["stop"] == "verified" and r.trace["drawn"] == 4 and r.answer == "5"
    assert [n for _, n in policy.calls] == [4] and prm.calls == [4]
    # the last round is cut to what the budget leaves
    texts, _ = pool_of(["1", "2", "3", "4", "5", "6"])
    r, policy, _ = run_one("majority_stop:n=6,r=4,k=3,s=1,j=0,kg=2", texts)
    assert r.trace["stop"] == "budget" and [n for _, n in policy.calls] == [4, 2]


# -- budget and compute ------------------------------------------------------------------------------

STRATEGIES = ["majority_stop:n=4,r=1,k=2,s=1,j=0,kg=2", "majority_stop:n=8,r=1,k=3,s=1,j=6,kg=2",
              "majority_stop:n=8,r=3,k=3,s=0.6,j=4,kg=2", "majority_stop:n=16,r=2,k=3,s=1,j=6,kg=2",
              "bon_verified:n=4,r=1,tau=0.95", "bon_verified:n=8,r=3,tau=0.95", "bon_verified:n=16,r=1,tau=0.5"]


def _random_pool(rng: random.Random, size: int, tag: str):
    answers = [rng.choice(["5", "5", "7", "8", None]) for _ in range(size)]
    steps = [rng.randint(1, 3) for _ in range(size)]
    texts = [solution(f"{tag}{letters(i)}", a, s) for i, (a, s) in enumerate(zip(answers, steps))]
    return texts, {t: [rng.choice([0.05, 0.5, 0.95, 0.95]) for _ in range(s)] for t, s in zip(texts, steps)}


@pytest.mark.parametrize("key", STRATEGIES)
def test_never_more_than_n_and_charged_exactly_what_was_drawn_and_scored(key):
    strategy = Strategy.from_key(key)
    rng = random.Random(key)
    questions = [f"question {letters(i)}" for i in range(6)]
    pools, table = {}, {}
    for q in questions:
        pools[q], scores = _random_pool(rng, 16, q.replace(" ", ""))
        table.update(scores)
    policy, prm = PoolPolicy(pools), PoolPRM(table)
    results = run_search([Problem(f"p{i}", q, "5") for i, q in enumerate(questions)], strategy, policy, prm)
    for q, r in zip(questions, results):
        m = r.trace["drawn"]
        assert 1 <= m <= strategy.n and len(r.candidates) == m and policy.cursor[q] == m
        assert r.trace["stop"] in (("agree", "give_up", "budget") if strategy.method == "majority_stop"
                                   else ("verified", "budget"))
        assert (m == strategy.n) or r.trace["stop"] != "budget"
        assert [c.text for c in r.candidates] == pools[q][:m]
        prompt = words(policy.format_prompt(q))
        generated = sum(words(t) for t in pools[q][:m])
        prm_tokens = sum(len(c.steps) + 1 for c in r.candidates) if strategy.uses_prm else 0
        c = r.compute
        assert (c.policy_prompt_tokens, c.policy_generated_tokens, c.prm_tokens) == (prompt, generated, prm_tokens)
        assert c.policy_context_tokens == prompt * r.trace["rounds"]
        assert c.flops == pytest.approx(2 * POLICY_PARAMS * (prompt + generated) + 2 * PRM_PARAMS * prm_tokens)
    # one generate call per round, for the problems still drawing, each with the same n
    rounds = max(r.trace["rounds"] for r in results)
    assert len(policy.calls) == rounds
    for i, (qs, n) in enumerate(policy.calls):
        assert qs == [q for q, r in zip(questions, results) if r.trace["rounds"] > i]
        assert n == min(strategy.round_size, strategy.n - i * strategy.round_size)
    if strategy.uses_prm:
        assert len(prm.calls) == rounds
    else:
        assert prm.calls == []


def test_a_stop_that_never_fires_in_one_round_is_majority_at_n():
    """r = n and k > n: one call with the majority's seed, the same samples, answer and compute."""
    from fakes import LevelPolicy

    probs = [Problem(f"p{i}", f"What is {i} + {i}?", str(2 * i), "test", {"level": 1 + i % 3}) for i in range(6)]
    policy = LevelPolicy(probs)
    fixed = run_search(probs, "majority:n=8", policy, seed=3)
    adaptive = run_search(probs, Strategy("majority_stop", n=8, round_size=8, stop_votes=9), policy, seed=3)
    for a, b in zip(fixed, adaptive):
        assert (a.answer, a.correct, a.compute.tokens, a.compute.flops) == (b.answer, b.correct, b.compute.tokens,
                                                                             b.compute.flops)
        assert [c.text for c in a.candidates] == [c.text for c in b.candidates] and b.trace["stop"] == "budget"


# -- the offline estimate from stored pools (train/fit/adaptive.py) ----------------------------------

#: Two pools of six: ties in the vote (first seen wins), answers missing, verified candidates with and
#: without an answer, steps that do not all check.
POOLS = {
    "tied": (["5", "7", "7", "5", "8", None], [[0.5, 0.5], [0.5, 0.5], [0.95, 0.5], [0.5, 0.5], [0.05, 0.5],
                                               [0.95, 0.95]]),
    "mixed": (["5", "7", "5", None, "7", "8"], [[0.95, 0.95], [0.95, 0.5], [0.5, 0.5], [0.95, 0.95], [0.95, 0.95],
                                                [0.05, 0.95]]),
    # a PRM-vote tie between two 5s (0.25 + 0.25) and one 7 (0.5): which is seen first depends on the order,
    # and the 5s are seen first more often (2 of 3) -- the tie rule shows in the expectation
    "uneven": (["5", "7", "5", "8", None, "9"], [[0.25, 0.5], [0.5, 0.5], [0.5, 0.25], [0.95, 0.95], [0.95, 0.95],
                                                [0.05, 0.5]]),
}
OFFLINE_STRATEGIES = [
    "majority_stop:n=4,r=1,k=2,s=1,j=0,kg=2", "majority_stop:n=6,r=1,k=3,s=1,j=3,kg=2",
    "majority_stop:n=5,r=2,k=2,s=0.6,j=4,kg=2", "majority_stop:n=6,r=4,k=2,s=0.5,j=0,kg=2",
    "majority_stop:n=3,r=1,k=9,s=1,j=0,kg=2",
    "bon_verified:n=4,r=1,tau=0.95", "bon_verified:n=6,r=4,tau=0.95", "bon_verified:n=5,r=2,tau=0.5",
    "bon_verified:n=3,r=1,tau=1",
]


def _stored(name):
    """A pool as the sweep stores it: per candidate its answer, grade, tokens, step scores and PRM tokens."""
    from ttsopt.data import extract_answer, is_equivalent
    from ttsopt.search import split_steps

    answers, scores = POOLS[name]
    texts, table = pool_of(answers, scores, tag=name)
    stored = [{"answer": extract_answer(t), "correct": bool(is_equivalent(extract_answer(t), "5"))
               if extract_answer(t) is not None else False, "tokens": words(t), "step_scores": table[t],
               "prm_tokens": len(split_steps(t)) + 1} for t in texts]
    return texts, table, stored


def _online_over_every_order(key, texts, table):
    """The online method run once per order of the pool (one problem per order, one run_search)."""
    orders = list(itertools.permutations(range(len(texts))))
    pools = {f"order {letters(i)}": [texts[j] for j in order] for i, order in enumerate(orders)}
    policy, prm = PoolPolicy(pools), PoolPRM(table)
    return run_search([Problem(f"p{i}", q, "5") for i, q in enumerate(pools)], key, policy, prm)


@pytest.mark.parametrize("name", sorted(POOLS))
def test_the_offline_estimate_is_the_mean_of_the_online_runs_over_every_order(name):
    from ttsopt.train.fit.adaptive import STOPS, estimate_adaptive

    texts, table, stored = _stored(name)
    estimates = estimate_adaptive([c["answer"] for c in stored], [c["correct"] for c in stored],
                                  [c["tokens"] for c in stored], OFFLINE_STRATEGIES,
                                  prm_tokens=[c["prm_tokens"] for c in stored],
                                  step_scores=[c["step_scores"] for c in stored])
    assert [e.strategy for e in estimates] == OFFLINE_STRATEGIES
    seen = set()
    for key, est in zip(OFFLINE_STRATEGIES, estimates):
        runs = _online_over_every_order(key, texts, table)
        assert est.exact and est.label_se == 0.0
        assert est.label == pytest.approx(sum(r.correct for r in runs) / len(runs), abs=1e-12), key
        assert est.drawn == pytest.approx(sum(r.trace["drawn"] for r in runs) / len(runs), abs=1e-12), key
        assert est.generated_tokens == pytest.approx(
            sum(r.compute.policy_generated_tokens for r in runs) / len(runs), abs=1e-12), key
        assert est.prm_tokens == pytest.approx(sum(r.compute.prm_tokens for r in runs) / len(runs), abs=1e-12), key
        for stop in STOPS:
            share = sum(r.trace["stop"] == stop for r in runs) / len(runs)
            assert est.stops[stop] == pytest.approx(share, abs=1e-12), (key, stop)
            seen |= {stop} if share else set()
    assert seen == set(STOPS)  # every stop reason is reached on these pools


def test_a_sampled_estimate_reports_its_standard_error_below_the_bound():
    from ttsopt.train.fit.adaptive import estimate_adaptive

    _, _, stored = _stored("mixed")
    stored = stored * 2  # 12 candidates: 95 040 ordered prefixes of 5, more than the default enumerates
    args = ([c["answer"] for c in stored], [c["correct"] for c in stored], [c["tokens"] for c in stored],
            ["majority_stop:n=5,r=1,k=3,s=1,j=4,kg=2", "bon_verified:n=5,r=1,tau=0.95"])
    kw = dict(prm_tokens=[c["prm_tokens"] for c in stored], step_scores=[c["step_scores"] for c in stored])
    sampled = estimate_adaptive(*args, **kw, seed=1)
    assert sampled == estimate_adaptive(*args, **kw, seed=1)  # seeded
    exact = estimate_adaptive(*args, **kw, exact_limit=10**6)
    for s, e in zip(sampled, exact):
        assert not s.exact and e.exact and 0 < s.label_se < 0.005
        assert abs(s.label - e.label) < 4 * s.label_se and abs(s.drawn - e.drawn) < 0.1


def test_adaptive_labels_from_a_snapshot(tmp_path):
    """Read from a snapshot's pools like train/fit/rest.py: a majority_stop that never stops at the pool's
    size draws the whole pool and is charged what the sweep charged majority@N_max."""
    import numpy as np

    from fakes import HashPRM, LevelPolicy
    from ttsopt.train.fit.adaptive import adaptive_labels, default_grid, load_adaptive
    from ttsopt.train.fit.labels import strategy_labels
    from ttsopt.train.sweep.config import config_from_dict
    from ttsopt.train.sweep.driver import run_sweep
    from ttsopt.train.sweep.snapshot import export_snapshot, read_table
    from ttsopt.train.sweep.store import OutcomeStore
    from ttsopt.train.sweep.units import ChunkWorker

    probs = [Problem(f"p{i}", f"What is {i} + {i}?", str(2 * i), "test", {"level": 1 + i % 3}) for i in range(8)]
    cfg = config_from_dict({"name": "t", "problems": "builtin:arith", "pairs": [{"policy": "levels", "prm": "hash"}],
                            "methods": {"majority": {}, "best_of_n": {"agg": ["min"], "vote": ["prm_vote"]}},
                            "budgets": [1, 2, 4], "n_subsets": 4, "chunk_size": 4})
    store = OutcomeStore(tmp_path / "s.sqlite")
    policy = LevelPolicy(probs)
    run_sweep(cfg, store, probs, workers={"levels": ChunkWorker(cfg, "levels", ["hash"], policy=policy,
                                                                 prms={"hash": HashPRM()})})
    snap = tmp_path / "snap"
    export_snapshot(store, snap)
    grid = [*default_grid((2, 4, 8)), "majority_stop:n=4,r=1,k=9,s=1,j=0,kg=2"]
    rows = adaptive_labels(snap, grid)
    assert set(rows["strategy"]) == {s for s in grid if int(s.split("n=")[1].split(",")[0]) <= 4}  # n=8 > pool
    assert len(rows) == len(probs) * rows["strategy"].nunique()
    assert rows["label"].between(0, 1).all() and rows["exact"].all() and (rows["label_se"] == 0).all()
    assert (rows["drawn"] <= rows["n"]).all() and (rows["drawn"] >= 1).all()
    assert np.allclose(rows[[f"stop_{s}" for s in ("agree", "give_up", "verified", "budget")]].sum(axis=1), 1.0)
    fixed = strategy_labels(read_table(snap, "outcomes"))
    full = rows[rows["strategy"] == "majority_stop:n=4,r=1,k=9,s=1,j=0,kg=2"].merge(
        fixed[fixed["strategy"] == "majority:n=4"], on=["policy", "prm", "problem_id"], suffixes=("", "_sweep"))
    assert len(full) == len(probs) and (full["drawn"] == 4).all()
    for col in ("tokens", "flops"):
        assert np.allclose(full[col], full[f"{col}_sweep"], rtol=1e-12, atol=0), col
    bon = rows[rows["strategy"].str.startswith("bon_verified")]
    assert (bon["tokens"] > bon["generated_tokens"]).all()  # PRM tokens charged
    assert load_adaptive([snap, snap], grid).shape[0] == 2 * len(rows)


def test_a_sweep_config_naming_an_adaptive_method_is_refused_with_what_to_sweep_instead():
    import pytest

    from ttsopt.train.sweep.config import SweepConfigError, config_from_dict

    for method, instead in (("majority_stop", "majority"), ("bon_verified", "best_of_n")):
        with pytest.raises(SweepConfigError) as e:
            config_from_dict({"name": "t", "problems": "builtin:arith", "pairs": ["smollm2-135m+calc"],
                              "methods": {method: {}}, "budgets": [4]}, source="c.yaml")
        assert str(e.value).startswith(f"c.yaml: methods.{method}:") and f"sweep `{instead}`" in str(e.value)
