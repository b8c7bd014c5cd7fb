"""A strategy: a search method with its hyper-parameters and budget, and a stable key."""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("cot", "majority", "best_of_n", "beam", "dvts")
AGGREGATIONS = ("min", "last", "avg", "prod")
VOTES = ("majority", "prm_max", "prm_vote")


@dataclass(frozen=True)
class Strategy:
    """What to run and how much of it.

    ``n`` is the budget: samples for majority/Best-of-N, the number of beams kept alive
    times the beam width for beam search (the paper's N), the total leaves for DVTS.
    ``m`` is the beam width (beam search) or the expansion per subtree (DVTS);
    ``agg`` turns step scores into one solution score; ``vote`` picks the final answer.
    Fields that do not apply to a method are normalised away, so two spellings of the
    same strategy share one ``key``.
    """

    method: str
    n: int = 1
    m: int = 1
    agg: str = "last"
    vote: str = "majority"
    max_depth: int = 10

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.agg not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.agg!r}; expected one of {', '.join(AGGREGATIONS)}")
        if self.vote not in VOTES:
            raise ValueError(f"unknown vote {self.vote!r}; expected one of {', '.join(VOTES)}")
        if self.n < 1 or self.m < 1:
            raise ValueError(f"n and m must be >= 1, got n={self.n}, m={self.m}")
        if self.method == "cot":
            self._set(n=1, m=1, agg="last", vote="majority")
        elif self.method == "majority":
            self._set(m=1, agg="last", vote="majority")
        elif self.method == "best_of_n":
            self._set(m=1)
        if self.method in ("beam", "dvts"):
            if self.n % self.m:
                raise ValueError(f"{self.method}: n={self.n} must be a multiple of m={self.m}")
        if self.method in ("cot", "majority", "best_of_n"):
            self._set(max_depth=0)
        elif self.max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {self.max_depth}")

    def _set(self, **values) -> None:
        for k, v in values.items():
            object.__setattr__(self, k, v)

    @property
    def uses_prm(self) -> bool:
        return self.method in ("best_of_n", "beam", "dvts")

    @property
    def key(self) -> str:
        """Stable string id, e.g. ``beam:n=16,m=4,agg=last,vote=prm_vote,depth=10``."""
        if self.method == "cot":
            return "cot"
        if self.method == "majority":
            return f"majority:n={self.n}"
        if self.method == "best_of_n":
            return f"best_of_n:n={self.n},agg={self.agg},vote={self.vote}"
        return f"{self.method}:n={self.n},m={self.m},agg={self.agg},vote={self.vote},depth={self.max_depth}"

    @classmethod
    def from_key(cls, key: str) -> "Strategy":
        method, _, rest = key.partition(":")
        kw: dict = {}
        for part in filter(None, rest.split(",")):
            name, _, value = part.partition("=")
            name = {"depth": "max_depth"}.get(name, name)
            kw[name] = int(value) if name in ("n", "m", "max_depth") else value
        return cls(method=method, **kw)

    def __str__(self) -> str:
        return self.key
