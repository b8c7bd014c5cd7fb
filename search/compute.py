"""Compute accounting, as the paper counts it: FLOPs ~= 2 * parameters * tokens per model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class Compute:
    """Tokens and FLOPs spent on one problem (or summed over many).

    Policy FLOPs count prompt and generated tokens; PRM FLOPs count the tokens the
    PRM read. ``wall_time_s`` is measured, and for a batch run over many problems it is
    the batch's time shared equally among them (the engine cannot split it honestly).
    """

    policy_prompt_tokens: int = 0
    policy_generated_tokens: int = 0
    prm_tokens: int = 0
    policy_flops: float = 0.0
    prm_flops: float = 0.0
    wall_time_s: float = 0.0

    @property
    def flops(self) -> float:
        return self.policy_flops + self.prm_flops

    @property
    def policy_tokens(self) -> int:
        return self.policy_prompt_tokens + self.policy_generated_tokens

    def add_policy(self, prompt_tokens: int, generated_tokens: int, num_parameters: int) -> None:
        self.policy_prompt_tokens += prompt_tokens
        self.policy_generated_tokens += generated_tokens
        self.policy_flops += 2.0 * num_parameters * (prompt_tokens + generated_tokens)

    def add_prm(self, tokens: int, num_parameters: int) -> None:
        self.prm_tokens += tokens
        self.prm_flops += 2.0 * num_parameters * tokens

    def __add__(self, other: "Compute") -> "Compute":
        return Compute(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["flops"] = self.flops
        return d
