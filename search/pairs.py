"""Named (policy, PRM) pairs of the embedded default.

The paper's point is that the compute-optimal strategy depends on the pair, so the
embedded default ships four pairs of opposite character: two policies of different
strength, each with a calculator-checked PRM (real signal on arithmetic, blind to a wrong
setup) and an LLM-as-judge PRM run by the policy's own model (a correct adapter, near
chance at this size).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    policy: str
    prm: str

    @property
    def name(self) -> str:
        kind = "judge" if self.prm.startswith("judge:") else self.prm
        return f"{self.policy}+{kind}"


PAIRS: dict[str, Pair] = {
    p.name: p
    for p in (
        Pair("smollm2-135m", "calc"),
        Pair("smollm2-135m", "judge:smollm2-135m"),
        Pair("gemma3-270m", "calc"),
        Pair("gemma3-270m", "judge:gemma3-270m"),
    )
}


def resolve_pair(name: str) -> Pair:
    """``smollm2-135m+calc`` -> Pair(policy, prm); a clear error lists the known pairs."""
    if name in PAIRS:
        return PAIRS[name]
    raise KeyError(f"unknown pair {name!r}; known pairs: {', '.join(PAIRS)}")


def resolve_prm_spec(prm: str, policy: str) -> str:
    """``judge`` alone means 'judge with the policy's own model'."""
    return f"judge:{policy}" if prm == "judge" else prm
