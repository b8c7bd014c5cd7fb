"""Compute accounting: one measure for every method, FLOPs ~= 2 * parameters * tokens per model.

The budget axis must compare like with like, so every method is charged what a
KV-caching engine must process: the problem's prompt **once**, every generated token
once, and every token a PRM reads. A tree search that sends each kept path back to the
policy at every depth does not pay for its prefix again (an engine with prefix caching,
vLLM or our llama.cpp engine, keeps it); how much it re-sent is kept apart in
``policy_context_tokens``, an engine-efficiency figure like ``prefill_tokens``.
A model without parameters (the calculator PRM) costs 0 FLOPs by construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class Compute:
    """Tokens and FLOPs spent on one problem (or summed over many).

    ``policy_prompt_tokens`` is the prompt once per problem; ``policy_context_tokens``
    counts every prompt token sent over all calls (a tree search re-sends its paths).
    ``wall_time_s`` is measured, and for a batch run over many problems it is the batch's
    time shared equally among them (the engine cannot split it honestly).
    """

    policy_prompt_tokens: int = 0
    policy_generated_tokens: int = 0
    prm_tokens: int = 0
    policy_flops: float = 0.0
    prm_flops: float = 0.0
    wall_time_s: float = 0.0
    policy_context_tokens: int = 0

    @property
    def flops(self) -> float:
        return self.policy_flops + self.prm_flops

    @property
    def policy_tokens(self) -> int:
        return self.policy_prompt_tokens + self.policy_generated_tokens

    @property
    def tokens(self) -> int:
        """The budget axis in tokens: prompt once + generated + read by the PRM."""
        return self.policy_tokens + self.prm_tokens

    def add_policy(self, prompt_tokens: int, generated_tokens: int, num_parameters: int, *,
                   context_tokens: int | None = None) -> None:
        """Charge a prompt (once per problem) and its generated tokens; ``context_tokens`` is
        what the call re-sent (defaults to ``prompt_tokens``)."""
        self.policy_prompt_tokens += prompt_tokens
        self.policy_generated_tokens += generated_tokens
        self.policy_context_tokens += prompt_tokens if context_tokens is None else context_tokens
        self.policy_flops += 2.0 * num_parameters * (prompt_tokens + generated_tokens)

    def add_prm(self, tokens: int, num_parameters: int) -> None:
        self.prm_tokens += tokens
        self.prm_flops += 2.0 * num_parameters * tokens

    def __add__(self, other: "Compute") -> "Compute":
        return Compute(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["flops"] = self.flops
        d["tokens"] = self.tokens
        return d
