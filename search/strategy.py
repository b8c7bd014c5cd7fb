"""A strategy: a search method with its hyper-parameters and budget, and a stable key."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

METHODS = ("cot", "majority", "best_of_n", "beam", "dvts", "majority_stop", "bon_verified")
#: Methods whose spend depends on what their own samples show (search/methods/adaptive.py): ``n`` is
#: their most, not what they draw.
ADAPTIVE_METHODS = ("majority_stop", "bon_verified")
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

    The adaptive methods draw in rounds of ``round_size`` samples (key ``r``) and stop early:

    * ``majority_stop``: stop once the leading answer holds at least ``stop_votes`` (``k``)
      votes *and* a share of at least ``stop_share`` (``s``) of the samples drawn; give up
      once ``give_up_after`` (``j``, 0: never) samples are drawn and no answer holds
      ``give_up_votes`` (``kg``); return the plurality of what was drawn; never more than ``n``.
    * ``bon_verified``: every sample PRM-scored; stop at the first candidate with an answer
      whose lowest step score is at least ``tau`` and return its answer; else PRM-vote over
      the min-aggregated scores of everything drawn (``agg`` and ``vote`` are fixed to
      ``min`` and ``prm_vote``); never more than ``n``.
    """

    method: str
    n: int = 1
    m: int = 1
    agg: str = "last"
    vote: str = "majority"
    max_depth: int = 10
    round_size: int = 1
    stop_votes: int = 3
    stop_share: float = 1.0
    give_up_after: int = 0
    give_up_votes: int = 2
    tau: float = 0.95

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.agg not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.agg!r}; expected one of {', '.join(AGGREGATIONS)}")
        if self.vote not in VOTES:
            raise ValueError(f"unknown vote {self.vote!r}; expected one of {', '.join(VOTES)}")
        if self.n < 1 or self.m < 1:
            raise ValueError(f"n and m must be >= 1, got n={self.n}, m={self.m}")
        self._check_adaptive()
        if self.method == "cot":
            self._set(n=1, m=1, agg="last", vote="majority")
        elif self.method == "majority":
            self._set(m=1, agg="last", vote="majority")
        elif self.method == "best_of_n":
            self._set(m=1)
        elif self.method == "majority_stop":
            self._set(m=1, agg="last", vote="majority")
        elif self.method == "bon_verified":
            self._set(m=1, agg="min", vote="prm_vote")
        if self.method in ("beam", "dvts"):
            if self.n % self.m:
                raise ValueError(f"{self.method}: n={self.n} must be a multiple of m={self.m}")
        if self.method in ("cot", "majority", "best_of_n", *ADAPTIVE_METHODS):
            self._set(max_depth=0)
        elif self.max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {self.max_depth}")

    def _check_adaptive(self) -> None:
        """Check the adaptive knobs, and normalise them (defaults where they do not apply)."""
        for name in ("round_size", "stop_votes", "give_up_after", "give_up_votes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            self._set(**{name: int(value)})
        self._set(stop_share=float(self.stop_share), tau=float(self.tau))
        if self.round_size < 1 or self.stop_votes < 1 or self.give_up_votes < 1 or self.give_up_after < 0:
            raise ValueError(
                f"round_size, stop_votes and give_up_votes must be >= 1 and give_up_after >= 0, got "
                f"r={self.round_size}, k={self.stop_votes}, kg={self.give_up_votes}, j={self.give_up_after}"
            )
        if not 0.0 < self.stop_share <= 1.0:
            raise ValueError(f"stop_share must be in (0, 1], got {self.stop_share}")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {self.tau}")
        defaults = {f: Strategy.__dataclass_fields__[f].default
                    for f in ("round_size", "stop_votes", "stop_share", "give_up_after", "give_up_votes", "tau")}
        if self.method not in ADAPTIVE_METHODS:
            self._set(**defaults)
            return
        self._set(round_size=min(self.round_size, self.n))
        if self.method == "bon_verified":
            self._set(**{f: defaults[f] for f in ("stop_votes", "stop_share", "give_up_after", "give_up_votes")})
            return
        self._set(tau=defaults["tau"])
        if self.give_up_after > self.n:  # never reached: the budget stops first
            self._set(give_up_after=0)
        if self.give_up_after == 0:
            self._set(give_up_votes=defaults["give_up_votes"])

    def _set(self, **values) -> None:
        for k, v in values.items():
            object.__setattr__(self, k, v)

    @property
    def uses_prm(self) -> bool:
        return self.method in ("best_of_n", "beam", "dvts", "bon_verified")

    @property
    def adaptive(self) -> bool:
        """Whether the strategy may stop before ``n`` samples (``n`` is then its most)."""
        return self.method in ADAPTIVE_METHODS

    @property
    def key(self) -> str:
        """Stable string id, e.g. ``beam:n=16,m=4,agg=last,vote=prm_vote,depth=10``,
        ``majority_stop:n=16,r=1,k=3,s=1,j=6,kg=2`` or ``bon_verified:n=16,r=1,tau=0.95``."""
        if self.method == "cot":
            return "cot"
        if self.method == "majority":
            return f"majority:n={self.n}"
        if self.method == "best_of_n":
            return f"best_of_n:n={self.n},agg={self.agg},vote={self.vote}"
        if self.method == "majority_stop":
            return (f"majority_stop:n={self.n},r={self.round_size},k={self.stop_votes},s={_number(self.stop_share)},"
                    f"j={self.give_up_after},kg={self.give_up_votes}")
        if self.method == "bon_verified":
            return f"bon_verified:n={self.n},r={self.round_size},tau={_number(self.tau)}"
        return f"{self.method}:n={self.n},m={self.m},agg={self.agg},vote={self.vote},depth={self.max_depth}"

    @classmethod
    def from_key(cls, key: str) -> "Strategy":
        method, _, rest = key.partition(":")
        kw: dict = {}
        for part in filter(None, rest.split(",")):
            name, _, value = part.partition("=")
            name = _KEY_NAMES.get(name, name)
            if name in _INT_FIELDS:
                kw[name] = int(value)
            elif name in _FLOAT_FIELDS:
                kw[name] = float(value)
            else:
                kw[name] = value
        return cls(method=method, **kw)

    def __str__(self) -> str:
        return self.key


#: Key spellings of fields (``depth=10`` is ``max_depth``; the adaptive knobs go by their letters).
_KEY_NAMES = {"depth": "max_depth", "r": "round_size", "k": "stop_votes", "s": "stop_share", "j": "give_up_after",
              "kg": "give_up_votes"}
_INT_FIELDS = ("n", "m", "max_depth", "round_size", "stop_votes", "give_up_after", "give_up_votes")
_FLOAT_FIELDS = ("stop_share", "tau")


def _number(x: float) -> str:
    """A float in a key: the shortest text that reads back to it, without a trailing ``.0`` (1.0 -> ``1``)."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text
