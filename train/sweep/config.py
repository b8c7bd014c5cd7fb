"""Sweep configuration: which pairs, problems, strategies, budgets and seeds to run.

A YAML or TOML file, e.g.::

    name: arith-embedded
    problems: builtin:arith
    problem_options: {per_level: 20, seed: 0}
    pairs: [smollm2-135m+calc, smollm2-135m+judge]       # or {policy: ..., prm: ...}
    methods:
      cot: {}
      majority: {}
      best_of_n: {agg: [last, min], vote: [prm_vote, prm_max, majority]}
      beam: {m: [4], agg: [last], vote: [prm_vote]}
      dvts: {m: [4], agg: [last], vote: [prm_vote]}
    budgets: [1, 2, 4, 8, 16]
    seeds: [0]
    tree_seeds: 3              # replicas of every beam/DVTS run (their label is the mean)
    probe: {k: 4, seed: 4242}  # optional: k cheap samples per problem a router may look at
    n_subsets: 16
    sampling: {temperature: 0.7, max_tokens: 256, step_max_tokens: 96}
    engine: llamacpp        # optional; transformers by default
    order: interleave_levels   # optional; chunks mix levels (as_loaded by default)

Best-of-N and majority are pooled (one pool of max(budgets) samples per problem);
beam search and DVTS run at each budget, with the beam width capped at the budget.
A pair may be limited to the first problems: ``{pair: smollm2-135m+judge, max_problems: 100}``
(a multiple of ``chunk_size``).

:meth:`SweepConfig.fingerprint` hashes everything that changes an existing row (problems,
order, chunking, sampling, budgets, pooled rules, engine, device, probe settings); the store
refuses to resume under another fingerprint. Pairs, tree methods, seeds and tree replicas
only add or remove units, so they are not part of it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ttsopt.search.pairs import PAIRS, Pair, resolve_prm_spec
from ttsopt.search.registry import ENGINES
from ttsopt.search.strategy import AGGREGATIONS, METHODS, VOTES, Strategy

ORDERS = ("as_loaded", "interleave_levels", "interleave_kinds")

#: Bumped whenever the meaning of a stored row changes without a config change.
OUTCOME_VERSION = 3


@dataclass(frozen=True)
class ProbeConfig:
    """k samples per problem at the pool's temperature, drawn with their own seed (never the pool's)."""

    k: int = 4
    seed: int = 4242


class SweepConfigError(ValueError):
    """A config file that cannot be run; the message names the file (and line when known)."""


@dataclass
class SweepConfig:
    name: str
    problems: str
    pairs: list[Pair]
    methods: dict[str, dict[str, list]]
    budgets: list[int]
    seeds: list[int] = field(default_factory=lambda: [0])
    problem_options: dict[str, Any] = field(default_factory=dict)
    n_subsets: int = 16
    temperature: float = 0.7
    max_tokens: int = 256
    step_max_tokens: int = 96
    max_depth: int = 8
    chunk_size: int = 8
    device: str = "cpu"
    #: "transformers" or "llamacpp": which engine runs the presets (rows keep the pair names)
    engine: str = "transformers"
    #: "as_loaded" or "interleave_levels": chunks then mix levels, so a sweep stopped part
    #: way has rows for every level (chunks run in order)
    order: str = "as_loaded"
    #: replicas of every tree (beam/DVTS) unit, each with its own seed; labels average them
    tree_seeds: int = 1
    probe: ProbeConfig | None = None
    #: pair name -> how many of the first problems it runs on (None: all)
    max_problems: dict[str, int] = field(default_factory=dict)
    source: str = "<dict>"

    def fingerprint_fields(self) -> dict[str, Any]:
        """What changes an existing row's content: the fingerprint's input, as plain JSON."""
        return {
            "outcome_version": OUTCOME_VERSION, "problems": self.problems,
            "problem_options": {k: self.problem_options[k] for k in sorted(self.problem_options)},
            "order": self.order, "chunk_size": self.chunk_size, "temperature": self.temperature,
            "max_tokens": self.max_tokens, "step_max_tokens": self.step_max_tokens, "max_depth": self.max_depth,
            "budgets": self.budgets, "n_subsets": self.n_subsets, "pooled_rules": self.pooled_rules(),
            "engine": self.engine, "device": self.device,
            "probe": None if self.probe is None else {"k": self.probe.k, "seed": self.probe.seed},
        }

    def fingerprint(self) -> str:
        text = json.dumps(self.fingerprint_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()

    def problem_limit(self, pair: Pair) -> int | None:
        return self.max_problems.get(pair.name)

    def pair_prms(self, policy: str, chunk: int) -> list[str]:
        """The PRMs of ``policy``'s pairs that run on ``chunk`` (a pair limited to its first
        problems stops at its last chunk), in config order: the pairs a PRM-free unit, such as
        the CoT, writes rows for, whichever of them the driver computing it was given."""
        out = []
        for pair in self.pairs:
            limit = self.problem_limit(pair)
            if pair.policy == policy and (limit is None or chunk < limit // self.chunk_size):
                out.append(pair.prm)
        return out

    @property
    def n_max(self) -> int:
        return max(self.budgets)

    def pooled_rules(self) -> list[tuple[str, str]]:
        """(agg, vote) rules evaluated on pools: majority, then each PRM-scored Best-of-N rule.

        Best-of-N with a majority vote ignores the PRM, so it is recorded once, as ``majority``.
        """
        bon = self.methods.get("best_of_n")
        rules: list[tuple[str, str]] = []
        if "majority" in self.methods or (bon and "majority" in bon.get("vote", [])):
            rules.append(("last", "majority"))
        if bon is not None:
            rules += [(a, v) for a, v in itertools.product(bon.get("agg", ["last"]), bon.get("vote", ["prm_vote"]))
                      if v != "majority"]
        return rules

    @staticmethod
    def pooled_strategy(n: int, agg: str, rule: str) -> Strategy:
        if rule == "majority":
            return Strategy("majority", n=n)
        return Strategy("best_of_n", n=n, agg=agg, vote=rule)

    def tree_strategies(self) -> list[Strategy]:
        """Beam search and DVTS at every budget (beam width capped at the budget, n a multiple of it)."""
        out: list[Strategy] = []
        for method in ("beam", "dvts"):
            if method not in self.methods:
                continue
            g = self.methods[method]
            for n, m, agg, v in itertools.product(self.budgets, g.get("m", [4]), g.get("agg", ["last"]),
                                                  g.get("vote", ["prm_vote"])):
                width = min(m, n)
                if n % width:
                    continue
                s = Strategy(method, n=n, m=width, agg=agg, vote=v, max_depth=self.max_depth)
                if s not in out:
                    out.append(s)
        return out


def pair_names(text: str) -> list[str]:
    """``"a+b, c+d"`` (the ``--pairs`` option) -> ``["a+b", "c+d"]``."""
    return [p.strip() for p in text.split(",") if p.strip()]


def check_pairs(cfg: SweepConfig, names: Sequence[str], *, label: str = "pairs") -> list[str]:
    """``names``, each a pair of ``cfg``; a ValueError names those that are not (in the order given,
    after ``label``) and the config's pairs. What ``ttsopt sweep --pairs`` and ``run_sweep(only_pairs=)``
    both check."""
    names = list(names)
    known = [pair.name for pair in cfg.pairs]
    unknown = list(dict.fromkeys(n for n in names if n not in known))
    if unknown:
        raise ValueError(f"{label} {', '.join(unknown)} not in {cfg.name}; its pairs: {', '.join(known)}")
    return names


def load_config(path: str | Path) -> SweepConfig:
    path = Path(path)
    if not path.is_file():
        raise SweepConfigError(f"sweep config not found: {path}")
    text = path.read_text()
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SweepConfigError(f"{path}: invalid TOML: {e}") from None
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise SweepConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    else:
        raise SweepConfigError(f"{path}: sweep configs are .yaml, .yml or .toml")
    if not isinstance(raw, dict):
        raise SweepConfigError(f"{path}: expected a mapping at the top level")
    return config_from_dict(raw, source=str(path))


#: Methods the catalogue knows that a sweep does not run, and why (a config naming one would otherwise
#: plan no unit for it, silently).
SWEEP_SKIPS = {
    "majority_stop": "an adaptive strategy; the sweep does not run it: its labels are estimated from the stored "
                     "majority/Best-of-N pools (train/fit/adaptive.py), so sweep `majority` at the largest N",
    "bon_verified": "an adaptive strategy; the sweep does not run it: its labels are estimated from the stored "
                    "Best-of-N pools (train/fit/adaptive.py), so sweep `best_of_n` at the largest N",
}

_KEYS = {"name", "problems", "problem_options", "pairs", "methods", "budgets", "seeds", "n_subsets",
         "sampling", "max_depth", "chunk_size", "device", "engine", "order", "tree_seeds", "probe"}


def config_from_dict(raw: dict[str, Any], *, source: str = "<dict>") -> SweepConfig:
    def fail(msg: str):
        raise SweepConfigError(f"{source}: {msg}")

    unknown = set(raw) - _KEYS
    if unknown:
        fail(f"unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    for key in ("problems", "pairs", "methods", "budgets"):
        if key not in raw:
            fail(f"missing required key {key!r}")
    pairs: list[Pair] = []
    max_problems: dict[str, int] = {}
    chunk_size = int(raw.get("chunk_size", 8))
    for p in raw["pairs"]:
        if isinstance(p, dict) and "pair" in p:
            extra = set(p) - {"pair", "max_problems"}
            if extra or p["pair"] not in PAIRS:
                fail(f"a limited pair is {{pair: NAME, max_problems: K}} with NAME one of {', '.join(PAIRS)}; got {p!r}")
            limit = p.get("max_problems")
            if limit is not None:
                if not isinstance(limit, int) or limit < 1 or limit % chunk_size:
                    fail(f"pair {p['pair']}: max_problems must be a positive multiple of chunk_size "
                         f"({chunk_size}), got {limit!r}")
                max_problems[p["pair"]] = limit
            pairs.append(PAIRS[p["pair"]])
        elif isinstance(p, str):
            if p not in PAIRS:
                fail(f"unknown pair {p!r}; known: {', '.join(PAIRS)} (or write {{policy: ..., prm: ...}})")
            pairs.append(PAIRS[p])
        elif isinstance(p, dict) and {"policy", "prm"} <= set(p):
            pairs.append(Pair(str(p["policy"]), resolve_prm_spec(str(p["prm"]), str(p["policy"]))))
        else:
            fail(f"a pair is a name or {{policy: ..., prm: ...}}, got {p!r}")
    methods: dict[str, dict[str, list]] = {}
    raw_methods = raw["methods"]
    if isinstance(raw_methods, list):
        raw_methods = {m: {} for m in raw_methods}
    for method, grid in raw_methods.items():
        if method not in METHODS:
            fail(f"unknown method {method!r}; expected {', '.join(METHODS)}")
        if method in SWEEP_SKIPS:
            fail(f"methods.{method}: {SWEEP_SKIPS[method]}")
        grid = dict(grid or {})
        for k, v in grid.items():
            if k not in ("m", "agg", "vote"):
                fail(f"methods.{method}: unknown hyper-parameter {k!r} (m, agg, vote)")
            grid[k] = v if isinstance(v, list) else [v]
            allowed = {"agg": AGGREGATIONS, "vote": VOTES}.get(k)
            for x in grid[k]:
                if allowed and x not in allowed:
                    fail(f"methods.{method}.{k}: {x!r} not in {allowed}")
                if k == "m" and (not isinstance(x, int) or x < 1):
                    fail(f"methods.{method}.m: {x!r} is not a positive integer")
        methods[method] = grid
    budgets = raw["budgets"]
    if not budgets or not all(isinstance(b, int) and b >= 1 for b in budgets):
        fail(f"budgets must be positive integers, got {budgets!r}")
    engine = str(raw.get("engine", "transformers"))
    if engine not in ENGINES:
        fail(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    order = str(raw.get("order", "as_loaded"))
    if order not in ORDERS:
        fail(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    tree_seeds = raw.get("tree_seeds", 1)
    if isinstance(tree_seeds, bool) or not isinstance(tree_seeds, int) or tree_seeds < 1:
        fail(f"tree_seeds must be a positive integer (replicas of each tree run), got {tree_seeds!r}")
    probe = None
    if raw.get("probe") is not None:
        pr = raw["probe"]
        if not isinstance(pr, dict) or set(pr) - {"k", "seed"}:
            fail(f"probe is {{k: K, seed: S}}, got {pr!r}")
        k, pseed = pr.get("k", 4), pr.get("seed", 4242)
        if not isinstance(k, int) or k < 1 or not isinstance(pseed, int):
            fail(f"probe: k must be a positive integer and seed an integer, got {pr!r}")
        probe = ProbeConfig(k=k, seed=pseed)
    sampling = dict(raw.get("sampling") or {})
    bad = set(sampling) - {"temperature", "max_tokens", "step_max_tokens"}
    if bad:
        fail(f"sampling: unknown keys {sorted(bad)}")
    return SweepConfig(
        name=str(raw.get("name") or Path(source).stem),
        problems=str(raw["problems"]),
        problem_options=dict(raw.get("problem_options") or {}),
        pairs=pairs,
        methods=methods,
        budgets=sorted(set(budgets)),
        seeds=list(raw.get("seeds") or [0]),
        n_subsets=int(raw.get("n_subsets", 16)),
        temperature=float(sampling.get("temperature", 0.7)),
        max_tokens=int(sampling.get("max_tokens", 256)),
        step_max_tokens=int(sampling.get("step_max_tokens", 96)),
        max_depth=int(raw.get("max_depth", 8)),
        chunk_size=chunk_size,
        device=str(raw.get("device", "cpu")),
        engine=engine,
        order=order,
        tree_seeds=tree_seeds,
        probe=probe,
        max_problems=max_problems,
        source=source,
    )
