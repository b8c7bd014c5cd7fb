"""run_search and every method, driven by a scripted policy and PRM whose right output is known by hand.

The scripted policy answers from a table keyed by (question, solution prefix); a step's
text starts with its name and the scripted PRM scores a step by that name. Token counts
are whitespace words, so every cost below can be checked with a pencil.
"""

from __future__ import annotations

import pytest

from ttsopt.data import Problem
from ttsopt.search import Completion, Generation, SamplingParams, StepScores, Strategy, run_search

POLICY_PARAMS = 1000
PRM_PARAMS = 10


def words(text: str) -> int:
    return len(text.split())


class ScriptedPolicy:
    """Completions from ``script[question][prefix]``: a list of ``(text, finish_reason)``, at least n long."""

    name = "scripted"
    num_parameters = POLICY_PARAMS

    def __init__(self, script):
        self.script = script
        self.calls: list[tuple[list[str], SamplingParams]] = []

    def format_prompt(self, question: str) -> str:
        return f"Q: {question}\nA: "

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params))
        gens = []
        for prompt in prompts:
            head, _, prefix = prompt.partition("\nA: ")
            options = self.script[head[len("Q: "):]]
            options = options(prefix, params) if callable(options) else options[prefix]
            assert len(options) >= params.n, f"script too short for prefix {prefix!r}"
            comps = [Completion(text=t, tokens=words(t), finish_reason=f) for t, f in options[: params.n]]
            gens.append(Generation(prompt_tokens=words(prompt), completions=comps))
        return gens


class ScriptedPRM:
    """Scores a step by its first word (per question where ``by_question`` says); one token per step."""

    name = "scripted-prm"
    num_parameters = PRM_PARAMS

    def __init__(self, scores: dict[str, float], by_question: dict[str, dict[str, float]] | None = None):
        self.scores = scores
        self.by_question = by_question or {}
        self.calls: list[list] = []

    def score(self, items):
        self.calls.append(list(items))
        results = []
        for question, steps in items:
            table = self.by_question.get(question, self.scores)
            results.append(StepScores(scores=[table[s.split()[0]] for s in steps], tokens=len(steps)))
        return results


def step(name: str, answer: str | None = None) -> str:
    return f"{name} The answer is {answer}.\n\n" if answer else f"{name}\n\n"


# Beam search, N=4, M=2 (two beam slots), on question "one".
#   depth 1: a .9  b .2  c .8  d .5                -> keep a, c
#   depth 2: a->aa .3, ab .95 (answer 5); c->ca .6, cb .1
#            ranked ab, ca, aa, cb                 -> keep ab (finished, to the pool), ca
#   depth 3: ca->caa .4 (answer 7, eos), cab .7 (answer 6)
#            one slot left                         -> keep cab (finished)
#   pool: ab (5, .95), cab (6, .7)
BEAM_SCRIPT = {
    "": [(step("a"), "stop"), (step("b"), "stop"), (step("c"), "stop"), (step("d"), "stop")],
    "a\n\n": [(step("aa"), "stop"), (step("ab", "5"), "stop")],
    "c\n\n": [(step("ca"), "stop"), (step("cb"), "stop")],
    "c\n\nca\n\n": [("caa The answer is 7.", "eos"), (step("cab", "6"), "stop")],
}
BEAM_SCORES = {"a": .9, "b": .2, "c": .8, "d": .5, "aa": .3, "ab": .95, "ca": .6, "cb": .1, "caa": .4, "cab": .7}


def beam_run(vote="prm_max", agg="last", **kwargs):
    policy, prm = ScriptedPolicy({"one": BEAM_SCRIPT}), ScriptedPRM(BEAM_SCORES)
    strategy = Strategy("beam", n=4, m=2, agg=agg, vote=vote)
    [result] = run_search([Problem("p1", "one", "5")], strategy, policy, prm, **kwargs)
    return result, policy, prm


def test_beam_keeps_the_top_n_over_m_at_each_depth():
    result, _, _ = beam_run()
    kept = [[(k["index"], k["parent"], k["score"]) for k in d["kept"]] for d in result.trace["depths"]]
    assert kept == [
        [(0, None, .9), (2, None, .8)],  # a, c
        [(1, 0, .95), (2, 2, .6)],  # ab (child of a), ca (child of c)
        [(1, 2, .7)],  # cab (child of ca)
    ]
    assert [d["generated"] for d in result.trace["depths"]] == [4, 4, 2]
    assert result.trace["depths"][1]["kept"][0]["step"] == "ab The answer is 5.\n\n"


def test_finished_beams_leave_the_active_set_and_the_search_shrinks():
    result, policy, prm = beam_run()
    shapes = [(len(prompts), params.n) for prompts, params in policy.calls]
    assert shapes == [(1, 4), (2, 2), (1, 2)]  # after ab finished only ca expands
    assert policy.calls[2][0] == ["Q: one\nA: c\n\nca\n\n"]
    assert [len(items) for items in prm.calls] == [4, 4, 2]
    assert [c.text for c in result.candidates] == [
        "a\n\nab The answer is 5.\n\n", "c\n\nca\n\ncab The answer is 6.\n\n",  # caa (eos) ranked out
    ]
    assert [c.finish_reason for c in result.candidates] == ["answer", "answer"]
    assert [c.step_scores for c in result.candidates] == [[.9, .95], [.8, .6, .7]]
    assert [c.answer for c in result.candidates] == ["5", "6"]


@pytest.mark.parametrize("vote, answer", [("prm_max", "5"), ("prm_vote", "5"), ("majority", "5")])
def test_beam_final_answer_by_each_vote(vote, answer):
    result, _, _ = beam_run(vote=vote)
    assert result.answer == answer
    assert result.correct is True
    assert result.trace["vote"] == vote


def test_beam_scores_whole_paths_with_the_aggregation():
    result, _, _ = beam_run(agg="min")
    assert [c.score for c in result.candidates] == [.9, .6]  # min(.9, .95), min(.8, .6, .7)


def test_beam_compute_charges_the_prompt_once_and_keeps_the_re_sent_context_apart():
    result, _, _ = beam_run()
    c = result.compute
    # prompts sent: "Q: one A:" (3 words); "... a" and "... c" (4 each); "... c ca" (5)
    assert c.policy_context_tokens == 3 + 4 + 4 + 5
    assert c.policy_prompt_tokens == 3  # what a KV-caching engine must read: the prompt once
    # depth 1: 4 one-word steps; depth 2: aa 1 + ab 5 + ca 1 + cb 1; depth 3: caa 5 + cab 5
    assert c.policy_generated_tokens == 4 + 8 + 10
    assert c.prm_tokens == 4 * 1 + 4 * 2 + 2 * 3  # one token per step the PRM read
    assert c.tokens == 3 + 22 + 18
    assert c.policy_flops == 2 * POLICY_PARAMS * (3 + 22)
    assert c.prm_flops == 2 * PRM_PARAMS * 18
    assert c.wall_time_s > 0


def test_beam_sends_step_stop_and_step_token_limit():
    _, policy, _ = beam_run(step_max_tokens=7, temperature=0.5)
    for _, params in policy.calls:
        assert params.stop == ("\n\n",)
        assert (params.max_tokens, params.temperature) == (7, 0.5)


def endless(prefix, params):
    """Never finishes on its own; writes the answer only when asked for the whole rest."""
    if params.stop:
        return [("x\n\n", "stop")] * params.n
    return [("x The answer is 3.", "eos")] * params.n


@pytest.mark.parametrize("method", ["beam", "dvts"])
def test_depth_limit_forces_one_last_full_completion(method):
    policy, prm = ScriptedPolicy({"q": endless}), ScriptedPRM({"x": .5})
    strategy = Strategy(method, n=2, m=2, max_depth=3)
    [result] = run_search([Problem("p", "q", "3")], strategy, policy, prm, max_tokens=50, step_max_tokens=9)
    assert len(policy.calls) == 3
    assert [p.stop for _, p in policy.calls] == [("\n\n",), ("\n\n",), ()]
    assert [p.max_tokens for _, p in policy.calls] == [9, 9, 50]
    [cand] = result.candidates
    assert cand.text == "x\n\nx\n\nx The answer is 3."
    assert (cand.finish_reason, cand.answer, result.correct) == ("eos", "3", True)
    assert len(result.trace["depths"]) == 3


def test_a_path_that_spends_max_tokens_is_finished():
    policy, prm = ScriptedPolicy({"q": endless}), ScriptedPRM({"x": .5})
    [result] = run_search([Problem("p", "q", "3")], Strategy("beam", n=2, m=2), policy, prm, max_tokens=2)
    assert len(policy.calls) == 2  # two one-token steps reach max_tokens=2
    [cand] = result.candidates
    assert (cand.finish_reason, cand.answer, result.answer, result.correct) == ("length", None, None, False)


# DVTS, N=4, M=2: two subtrees {a, b} and {c, d}.
#   depth 1: a .9  b .8 | c .1  d .2   -> a | d   (beam search would keep a and b)
#   depth 2: a->aa .5 (answer 4, eos), ab .4 | d->da .3, db .6   -> aa (finished) | db
#   depth 3: db->dba .2, dbb .7 (answer 8, eos)                   -> dbb
DVTS_SCRIPT = {
    "": [(step("a"), "stop"), (step("b"), "stop"), (step("c"), "stop"), (step("d"), "stop")],
    "a\n\n": [("aa The answer is 4.", "eos"), (step("ab"), "stop")],
    "d\n\n": [(step("da"), "stop"), (step("db"), "stop")],
    "d\n\ndb\n\n": [("dba The answer is 9.", "eos"), ("dbb The answer is 8.", "eos")],
}
DVTS_SCORES = {"a": .9, "b": .8, "c": .1, "d": .2, "aa": .5, "ab": .4, "da": .3, "db": .6, "dba": .2, "dbb": .7}


def dvts_run(vote="prm_max"):
    policy, prm = ScriptedPolicy({"two": DVTS_SCRIPT}), ScriptedPRM(DVTS_SCORES)
    [result] = run_search([Problem("p2", "two", "4")], Strategy("dvts", n=4, m=2, vote=vote), policy, prm)
    return result, policy


def test_dvts_keeps_one_path_per_subtree():
    result, policy = dvts_run()
    kept = [[(k["subtree"], k["index"]) for k in d["kept"]] for d in result.trace["depths"]]
    assert kept == [[(0, 0), (1, 3)], [(0, 0), (1, 3)], [(1, 1)]]
    assert [(len(prompts), params.n) for prompts, params in policy.calls] == [(1, 4), (2, 2), (1, 2)]


def test_dvts_final_candidates_come_from_different_subtrees():
    result, _ = dvts_run()
    assert result.trace["subtrees"] == [0, 1]
    assert [c.text for c in result.candidates] == ["a\n\naa The answer is 4.", "d\n\ndb\n\ndbb The answer is 8."]
    assert [c.score for c in result.candidates] == [.5, .7]


@pytest.mark.parametrize("vote, answer, correct", [("prm_max", "8", False), ("prm_vote", "8", False),
                                                   ("majority", "4", True)])
def test_dvts_leaves_vote(vote, answer, correct):
    result, _ = dvts_run(vote)
    assert (result.answer, result.correct) == (answer, correct)


# Both kept beams finish at depth 1: "two" takes no part in later calls.
SHORT_SCRIPT = {"": [("x The answer is 4.", "eos"), ("y The answer is 4.", "eos"), ("z The answer is 1.", "eos"),
                     ("z The answer is 2.", "eos")]}
SHORT_SCORES = {"x": .9, "y": .8, "z": .1}


def test_tree_calls_are_batched_across_problems():
    script = {"one": BEAM_SCRIPT, "uno": BEAM_SCRIPT, "two": SHORT_SCRIPT}
    problems = [Problem("a", "one", "5"), Problem("b", "two", "4"), Problem("c", "uno", "6")]
    policy, prm = ScriptedPolicy(script), ScriptedPRM(BEAM_SCORES, by_question={"two": SHORT_SCORES})
    results = run_search(problems, Strategy("beam", n=4, m=2), policy, prm)
    assert len(policy.calls) == 3 and len(prm.calls) == 3  # one of each per depth, for all problems
    assert [len(prompts) for prompts, _ in policy.calls] == [3, 4, 2]
    assert [len(items) for items in prm.calls] == [12, 8, 4]
    assert [r.problem_id for r in results] == ["a", "b", "c"]
    assert [r.answer for r in results] == ["5", "4", "5"]
    assert [r.correct for r in results] == [True, True, False]
    # a problem alone gets the same answer and tokens as in the batch
    alone, _, _ = beam_run()
    assert results[0].compute.policy_tokens == alone.compute.policy_tokens
    assert results[0].compute.prm_tokens == alone.compute.prm_tokens


def test_chunks_split_the_calls_and_report_progress():
    script = {q: BEAM_SCRIPT for q in ("one", "uno", "eins")}
    problems = [Problem(q, q, "5") for q in script]
    policy, prm, seen = ScriptedPolicy(script), ScriptedPRM(BEAM_SCORES), []
    results = run_search(problems, Strategy("beam", n=4, m=2), policy, prm, problem_batch_size=2,
                         progress=lambda done, total: seen.append((done, total)))
    assert [len(prompts) for prompts, _ in policy.calls] == [2, 4, 2, 1, 2, 1]
    assert seen == [(2, 3), (3, 3)]
    assert [r.answer for r in results] == ["5"] * 3


def seeds_of(seed, strategy=Strategy("beam", n=4, m=2)):
    policy = ScriptedPolicy({"one": BEAM_SCRIPT})
    run_search([Problem("p", "one", "5")], strategy, policy, ScriptedPRM(BEAM_SCORES), seed=seed)
    return [params.seed for _, params in policy.calls]


def test_seeds_are_derived_from_the_seed_and_depth_and_repeat():
    first = seeds_of(0)
    assert first == seeds_of(0)
    assert len(set(first)) == len(first)  # every depth its own stream
    assert seeds_of(1) != first
    assert all(isinstance(s, int) and 0 <= s < 2**31 for s in first)


def sampled(answers):
    """A root-only script: one full sample per answer (None: no answer stated)."""
    texts = [(f"w\n\nThe answer is {a}." if a else "w\n\nno idea", "eos") for a in answers]
    return {"": texts}


def test_cot_is_one_greedy_sample():
    policy = ScriptedPolicy({"q": sampled(["3"])})
    [result] = run_search([Problem("p", "q", "3")], Strategy("cot"), policy, temperature=0.9, max_tokens=40)
    [(prompts, params)] = policy.calls
    assert (params.n, params.temperature, params.max_tokens, params.stop) == (1, 0.0, 40, ())
    assert (result.answer, result.correct, result.strategy) == ("3", True, "cot")
    [cand] = result.candidates
    assert cand.steps == ["w\n\n", "The answer is 3."] and cand.score is None


def test_majority_vote_tally_and_tie_without_consulting_a_prm():
    policy, prm = ScriptedPolicy({"q": sampled(["4", None, "3", "3", "4"])}), ScriptedPRM({})
    [result] = run_search([Problem("p", "q", "3")], Strategy("majority", n=5), policy, prm)
    assert prm.calls == []
    assert result.trace["tally"] == {"4": 2, "3": 2}
    assert (result.answer, result.correct) == ("4", False)  # tie: "4" appeared first
    assert result.candidates[1].answer is None


def bon_script(prefix, params):
    return [("a\n\nb The answer is 1.", "eos"), ("c\n\nd The answer is 2.", "eos"), ("e\n\nf The answer is 2.", "eos")]


BON_SCORES = {"a": .9, "b": .8, "c": .3, "d": .7, "e": .6, "f": .2}


@pytest.mark.parametrize("agg, vote, answer, scores", [
    ("last", "prm_max", "1", [.8, .7, .2]),
    ("min", "prm_vote", "1", [.8, .3, .2]),  # "1": .8 beats "2": .3 + .2
    ("avg", "prm_vote", "2", [.85, .5, .4]),  # "2": .5 + .4 beats "1": .85
    ("prod", "majority", "2", [.72, .21, .12]),
])
def test_best_of_n_scores_every_step_and_votes(agg, vote, answer, scores):
    policy, prm = ScriptedPolicy({"q": bon_script, "r": bon_script}), ScriptedPRM(BON_SCORES)
    problems = [Problem("p", "q", "2"), Problem("p2", "r", "1")]
    results = run_search(problems, Strategy("best_of_n", n=3, agg=agg, vote=vote), policy, prm)
    assert len(policy.calls) == 1 and len(prm.calls) == 1
    assert len(prm.calls[0]) == 6  # every candidate of every problem in one PRM call
    assert prm.calls[0][0] == ("q", ["a\n\n", "b The answer is 1."])
    for result in results:
        assert [c.score for c in result.candidates] == pytest.approx(scores)
        assert result.answer == answer
    assert [r.correct for r in results] == [answer == "2", answer == "1"]


def test_best_of_n_compute():
    policy, prm = ScriptedPolicy({"q": bon_script}), ScriptedPRM(BON_SCORES)
    [result] = run_search([Problem("p", "q", "1")], Strategy("best_of_n", n=3), policy, prm)
    c = result.compute
    assert (c.policy_prompt_tokens, c.policy_generated_tokens, c.prm_tokens) == (3, 3 * 6, 3 * 2)
    assert c.flops == 2 * POLICY_PARAMS * (3 + 18) + 2 * PRM_PARAMS * 6


@pytest.mark.parametrize("key", ["best_of_n:n=4,agg=last,vote=prm_max", "beam:n=4,m=2,agg=last,vote=prm_max,depth=5",
                                 "dvts:n=4,m=2,agg=min,vote=majority,depth=5"])
def test_strategies_that_score_steps_need_a_prm(key):
    policy = ScriptedPolicy({"one": BEAM_SCRIPT})
    with pytest.raises(ValueError, match="process reward model"):
        run_search([Problem("p", "one", "5")], key, policy)
    assert policy.calls == []


class ShortPolicy(ScriptedPolicy):
    def generate(self, prompts, params):
        gens = super().generate(prompts, params)
        gens[0].completions.pop()
        return gens


class ShortPRM(ScriptedPRM):
    def score(self, items):
        results = super().score(items)
        results[0].scores.pop()
        return results


def test_backends_that_break_the_protocol_are_caught():
    problem = Problem("p", "q", "1")
    with pytest.raises(RuntimeError, match="expected n=3"):
        run_search([problem], Strategy("majority", n=3), ShortPolicy({"q": bon_script}))
    with pytest.raises(RuntimeError, match="1 scores for 2 steps"):
        run_search([problem], Strategy("best_of_n", n=3), ScriptedPolicy({"q": bon_script}), ShortPRM(BON_SCORES))


def test_no_problems_no_calls():
    policy = ScriptedPolicy({})
    assert run_search([], Strategy("majority", n=4), policy) == []
    assert policy.calls == []


def test_results_serialise():
    import json

    result, _, _ = beam_run()
    json.dumps(result.to_dict())


class ConstantPRM:
    """A stand-in verifier with no opinion, for when the calculator PRM is not there."""

    name = "constant"
    num_parameters = 0

    def score(self, items):
        return [StepScores(scores=[0.5] * len(steps), tokens=len(steps)) for _, steps in items]


@pytest.fixture(scope="module")
def smollm2():
    hf_policy = pytest.importorskip("ttsopt.search.engines.hf_policy")
    return hf_policy.TransformersPolicy("smollm2-135m")


def two_arith_problems():
    try:
        from ttsopt.data.arith import arith_problems
    except ImportError:
        return [Problem("arith-1", "What is 3 + 4?", "7"), Problem("arith-3", "What is 6 * 7?", "42")]
    return [*arith_problems(per_level=1, levels=(1,)), *arith_problems(per_level=1, levels=(3,))]


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("method", ["beam", "dvts"])
def test_tree_search_with_the_real_smollm2(method, smollm2):
    try:
        from ttsopt.search.registry import load_prm

        prm = load_prm("calc")
    except ImportError:
        prm = ConstantPRM()
    problems = two_arith_problems()
    strategy = Strategy(method, n=4, m=2, max_depth=3)
    results = run_search(problems, strategy, smollm2, prm, seed=1, max_tokens=64, step_max_tokens=24)
    assert [r.problem_id for r in results] == [p.id for p in problems]
    for r in results:
        assert len(r.candidates) == 2  # N/M beams or subtrees
        assert r.correct in (True, False)
        assert 1 <= len(r.trace["depths"]) <= 3
        for c in r.candidates:
            assert c.text and c.steps and "".join(c.steps) == c.text
            assert len(c.step_scores) == len(c.steps) and 0.0 <= c.score <= 1.0
        assert r.compute.policy_generated_tokens > 0 and r.compute.policy_flops > 0
        assert r.compute.wall_time_s > 0
        if r.answer is not None:
            assert r.answer in [c.answer for c in r.candidates]
    if method == "dvts":
        assert all(r.trace["subtrees"] == [0, 1] for r in results)
