"""Adaptive methods: what they spend depends on what their own samples show (issue #26).

Both draw whole solutions in rounds of ``strategy.round_size`` samples, one ``policy.generate``
call per round for every problem of the chunk still drawing (the prompt is charged once, on the
first round, as everywhere: a prefix-caching engine keeps its KV across rounds), check their stop
rule after every round, and never draw more than ``strategy.n``:

* ``majority_stop``: stop once the leading answer holds at least ``stop_votes`` votes and a share
  of at least ``stop_share`` of the samples drawn (``"agree"``); give up once ``give_up_after``
  samples are drawn and no answer holds ``give_up_votes`` (``"give_up"``); else go on to ``n``
  (``"budget"``). The answer is the plurality of everything drawn (``vote(..., "majority")``).
* ``bon_verified``: every round is PRM-scored (one ``prm.score`` call per round); stop at the
  first candidate, in draw order, that has an answer and whose lowest step score is at least
  ``tau`` (``"verified"``: its answer wins); at ``n`` without one (``"budget"``), PRM-vote over
  the min-aggregated scores of everything drawn. For the calculator PRM (step scores 0.05 wrong,
  0.5 nothing to check, 0.95 checked) ``tau = 0.95`` means every step stated an equation and
  every equation checked.

What a problem is charged is what it drew and what was scored (the ``Ledger``): a sample drawn in
a round after the one that stopped it is never drawn, but the rest of the stopping round is
(drawn and scored together). The trace says why it stopped and how much it drew: ``stop``
(``agree`` | ``give_up`` | ``verified`` | ``budget``), ``drawn`` (samples), ``rounds`` (calls),
besides the vote (``vote``, ``tally``, ``winner``: the index of the candidate whose answer won).

The stop rules are plain functions of the candidates drawn so far (:func:`majority_stop_reason`,
:func:`verified`), so the offline estimate from stored pools (``ttsopt.train.fit.adaptive``) can
be checked against them.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from ..aggregate import vote, vote_key
from ..result import Candidate
from ..strategy import Strategy
from .calls import Ledger, Outcome, Settings
from .sampling import sample_candidates, score_candidates


def majority_stop_reason(drawn: Sequence[Candidate], strategy: Strategy) -> str | None:
    """Why ``majority_stop`` stops after ``drawn`` (checked at the end of a round), or None to go on.

    The share is of every sample drawn, those without an answer included (they vote for nothing).
    """
    m = len(drawn)
    counts = Counter(k for k in (vote_key(c.answer) for c in drawn) if k is not None)
    top = max(counts.values(), default=0)
    if m and top >= strategy.stop_votes and top / m >= strategy.stop_share:
        return "agree"
    if strategy.give_up_after and m >= strategy.give_up_after and top < strategy.give_up_votes:
        return "give_up"
    if m >= strategy.n:
        return "budget"
    return None


def verified(candidate: Candidate, tau: float) -> bool:
    """Whether a scored candidate passes ``bon_verified``'s check: an answer, steps, lowest step score >= tau."""
    return (vote_key(candidate.answer) is not None and bool(candidate.step_scores)
            and min(candidate.step_scores) >= tau)


def _rounds(ledger: Ledger, questions: Sequence[str], prompts: Sequence[str], strategy: Strategy,
            settings: Settings, check) -> tuple[list[list[Candidate]], list[str], list[int]]:
    """Draw rounds until ``check(problem, drawn, new_start)`` returns a stop reason for every problem."""
    pools: list[list[Candidate]] = [[] for _ in prompts]
    reasons: list[str] = [""] * len(prompts)
    rounds = [0] * len(prompts)
    active = list(range(len(prompts)))
    call = 0
    while active:
        drawn = len(pools[active[0]])  # every active problem has drawn the same so far
        size = min(strategy.round_size, strategy.n - drawn)
        new = sample_candidates(ledger, [prompts[p] for p in active], size, settings.temperature, settings,
                                owners=active, call=call)
        call += 1
        if strategy.uses_prm:
            score_candidates(ledger, [questions[p] for p in active], new, strategy.agg, owners=active)
        going = []
        for p, cands in zip(active, new):
            start = len(pools[p])
            pools[p].extend(cands)
            rounds[p] += 1
            reason = check(p, pools[p], start)
            if reason is None:
                going.append(p)
            else:
                reasons[p] = reason
        active = going
    return pools, reasons, rounds


def run_majority_stop(ledger: Ledger, questions: Sequence[str], prompts: Sequence[str], strategy: Strategy,
                      settings: Settings) -> list[Outcome]:
    """Majority vote that stops drawing once the samples agree (or give up); no PRM is consulted."""
    pools, reasons, rounds = _rounds(ledger, questions, prompts, strategy, settings,
                                     lambda p, drawn, start: majority_stop_reason(drawn, strategy))
    out = []
    for pool, reason, r in zip(pools, reasons, rounds):
        result = vote(pool, "majority")
        out.append(Outcome(answer=result.answer, candidates=pool, trace={
            "vote": "majority", "tally": result.tally, "winner": result.winner,
            "stop": reason, "drawn": len(pool), "rounds": r}))
    return out


def run_bon_verified(ledger: Ledger, questions: Sequence[str], prompts: Sequence[str], strategy: Strategy,
                     settings: Settings) -> list[Outcome]:
    """Best-of-N that stops at the first candidate the PRM verifies; else PRM-vote (min) over all drawn."""
    hits: dict[int, int] = {}

    def check(p: int, drawn: list[Candidate], start: int) -> str | None:
        hit = next((i for i in range(start, len(drawn)) if verified(drawn[i], strategy.tau)), None)
        if hit is not None:
            hits[p] = hit
            return "verified"
        return "budget" if len(drawn) >= strategy.n else None

    pools, reasons, rounds = _rounds(ledger, questions, prompts, strategy, settings, check)
    out = []
    for p, (pool, reason, r) in enumerate(zip(pools, reasons, rounds)):
        result = vote(pool, strategy.vote)
        trace = {"vote": strategy.vote, "tally": result.tally, "winner": result.winner, "stop": reason,
                 "drawn": len(pool), "rounds": r, "tau": strategy.tau}
        answer = result.answer
        if p in hits:
            answer = pool[hits[p]].answer
            trace.update(vote="verified", winner=hits[p])
        out.append(Outcome(answer=answer, candidates=pool, trace=trace))
    return out


__all__ = ["majority_stop_reason", "run_bon_verified", "run_majority_stop", "verified"]
