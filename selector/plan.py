"""The verify-first cascade's plan as one typed, versioned record (``manifest["cascade"][pair]``).

Training fits the plan (``train/fit/cascade.py``: per budget N the threshold τ on the PRM's lowest
step score of the greedy CoT and the strategy a doubted CoT escalates to; optionally per bin of the
router's predicted CoT accuracy and per question level) and the router runs it online. Both sides
used to agree on a dict by its key names only; this module is the one place that says what the plan
holds, so the writer and the reader cannot drift apart:

- :class:`StagePlan`: one (τ, escalation) choice with the training figures it was chosen on.
- :class:`CascadePlan`: a pair's plan: the per-budget stages, the binned and level variants, the
  mode ``cascade=True`` runs, the format version.
- :func:`default_mode`: the one rule for which mode ``cascade=True`` runs (training records it,
  the router applies it to what the artifact has).

:meth:`CascadePlan.from_dict` reads the manifest layout as written before this record existed (no
``version`` key: version 1), so routers trained earlier still load; :meth:`CascadePlan.to_dict`
writes that same layout plus ``version``. The one plan per budget is the ``"fitted"`` mode online;
the offline evaluation calls it ``"plain"``, accepted here as an alias wherever a mode is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

#: The layout :meth:`CascadePlan.to_dict` writes; a plan of a later version is refused, not misread.
PLAN_VERSION = 1
#: How the cascade escalates online (``Router.solve(..., cascade=...)``).
CASCADE_MODES = ("level", "binned", "fitted", "router")
#: Other names of a mode: the offline evaluation's ``"plain"`` is the online ``"fitted"``.
MODE_ALIASES = {"plain": "fitted"}
#: What the gate of every plan so far scores.
DEFAULT_GATE = "min step score of the greedy CoT"


class PlanError(ValueError):
    """A cascade plan that cannot be read: a missing field, an unknown mode, a newer format."""


def canonical_mode(name: str) -> str:
    """``name`` as one of :data:`CASCADE_MODES` (``"plain"`` is ``"fitted"``); PlanError if it is none."""
    mode = MODE_ALIASES.get(name, name) if isinstance(name, str) else name
    if mode not in CASCADE_MODES:
        raise PlanError(f"unknown cascade mode {name!r}; the modes are {', '.join(CASCADE_MODES)} "
                        f"(aliases: {', '.join(f'{a}={m}' for a, m in MODE_ALIASES.items())})")
    return mode


def default_mode(*, levels: bool, bins: bool, level_preferred: bool = True) -> str:
    """The mode ``cascade=True`` runs: ``"level"`` where there are level plans and they are preferred
    (training prefers them where every level had enough problems to fit its own plan), else ``"binned"``
    where there are bins, else ``"fitted"`` (one plan per budget).

    One rule for both sides: training calls it with what it fitted (and records the answer as
    ``default_mode``), the router with what the artifact can run (level plans need its level model)."""
    if levels and level_preferred:
        return "level"
    return "binned" if bins else "fitted"


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


@dataclass(frozen=True)
class RouterGate:
    """For the router-escalated mode: τ among the gated options (None: no CoT-then-search fits the
    budget) and what keeping a CoT that failed its check is worth (its training accuracy there)."""

    tau: float | None
    keep_value: float | None


@dataclass(frozen=True)
class StagePlan:
    """One fitted choice: keep the greedy CoT when its gate score reaches ``tau`` (None: no CoT first),
    else run ``escalate`` (a strategy key, possibly outside the catalogue: a rest-of-budget option).

    The figures are the choice's means on the problems it was chosen on (``problems``): accuracy,
    expected tokens and FLOPs, and the share escalated. They are None where a plan was written by hand
    (tests) or by a writer that does not record them; the router runs on ``tau`` and ``escalate`` only.
    ``router`` is the router-escalated mode's gate, recorded with the per-budget stages only."""

    tau: float | None
    escalate: str
    train_accuracy: float | None = None
    tokens: float | None = None
    flops: float | None = None
    escalated: float | None = None
    problems: int | None = None
    router: RouterGate | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StagePlan":
        if "escalate" not in d:
            raise PlanError(f"a cascade stage needs 'escalate' (the strategy a doubted CoT goes to), got {dict(d)}")
        router = None
        if "router_tau" in d or "keep_value" in d:
            router = RouterGate(_opt_float(d.get("router_tau")), _opt_float(d.get("keep_value")))
        return cls(tau=_opt_float(d.get("tau")), escalate=str(d["escalate"]),
                   train_accuracy=_opt_float(d.get("train_accuracy")), tokens=_opt_float(d.get("tokens")),
                   flops=_opt_float(d.get("flops")), escalated=_opt_float(d.get("escalated")),
                   problems=_opt_int(d.get("problems")), router=router)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tau": self.tau, "escalate": self.escalate}
        for name in ("train_accuracy", "tokens", "flops", "escalated", "problems"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.router is not None:
            out.update(router_tau=self.router.tau, keep_value=self.router.keep_value)
        return out


def _budget_keys(d: Mapping[Any, Any], where: str) -> dict[int, Any]:
    try:
        return {int(k): v for k, v in d.items()}
    except (TypeError, ValueError):
        raise PlanError(f"{where}: budgets must be keyed by N (generations), got {sorted(map(str, d))}") from None


@dataclass(frozen=True)
class BinnedPlans:
    """Per budget, one stage per bin of the router's predicted CoT accuracy (computed from the question's
    text before anything runs); ``edges`` cut the score into ``len(edges) + 1`` bins
    (:func:`ttsopt.selector.decide.bin_of`)."""

    edges: tuple[float, ...]
    budgets: dict[int, tuple[StagePlan, ...]]
    score: str | None = None  # what was binned, in words

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BinnedPlans":
        budgets = _budget_keys(d.get("budgets") or {}, "cascade bins")
        return cls(edges=tuple(float(e) for e in d.get("edges") or ()),
                   budgets={n: tuple(StagePlan.from_dict(s) for s in stages) for n, stages in sorted(budgets.items())},
                   score=d.get("score"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.score is None else {"score": self.score}
        out["edges"] = list(self.edges)
        out["budgets"] = {str(n): [s.to_dict() for s in stages] for n, stages in sorted(self.budgets.items())}
        return out


@dataclass(frozen=True)
class LevelPlans:
    """Per budget, one stage per question level (the level the artifact's level model predicts from the
    question's text); a level without a stage takes the budget's."""

    budgets: dict[int, dict[str, StagePlan]]
    by: str | None = None  # how the level is known, in words

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LevelPlans":
        budgets = _budget_keys(d.get("budgets") or {}, "cascade levels")
        return cls(budgets={n: {str(lv): StagePlan.from_dict(s) for lv, s in levels.items()}
                            for n, levels in sorted(budgets.items())}, by=d.get("by"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.by is None else {"by": self.by}
        out["budgets"] = {str(n): {lv: s.to_dict() for lv, s in levels.items()}
                          for n, levels in sorted(self.budgets.items())}
        return out


@dataclass(frozen=True)
class CascadePlan:
    """A pair's fitted cascade: the stage per budget N, and where fitted, the binned and level plans.

    ``default_mode`` is what training chose for ``cascade=True`` (None: an artifact that did not record
    it, read as "level where possible"); :meth:`online_default_mode` is what the router runs."""

    budgets: dict[int, StagePlan]
    gate: str | None = DEFAULT_GATE
    problems: int | None = None
    bins: BinnedPlans | None = None
    levels: LevelPlans | None = None
    default_mode: str | None = None
    version: int = PLAN_VERSION
    # JSON-ready; not compared (a plan's identity is what it holds)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CascadePlan":
        """A plan from ``manifest["cascade"][pair]``: the current layout, or the one written before this
        record (no ``version``)."""
        if not isinstance(d, Mapping):
            raise PlanError(f"a cascade plan is a mapping, got {type(d).__name__}")
        version = int(d.get("version", 1))
        if version > PLAN_VERSION:
            raise PlanError(f"cascade plan version {version} is newer than this ttsopt reads ({PLAN_VERSION}): "
                            "upgrade ttsopt")
        mode = d.get("default_mode")
        known = {"budgets", "gate", "problems", "bins", "levels", "default_mode", "version"}
        return cls(budgets={n: StagePlan.from_dict(s)
                            for n, s in sorted(_budget_keys(d.get("budgets") or {}, "cascade").items())},
                   gate=d.get("gate"), problems=_opt_int(d.get("problems")),
                   bins=BinnedPlans.from_dict(d["bins"]) if d.get("bins") else None,
                   levels=LevelPlans.from_dict(d["levels"]) if d.get("levels") else None,
                   default_mode=None if mode is None else canonical_mode(mode), version=PLAN_VERSION,
                   extra={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The manifest layout (what :meth:`from_dict` reads), with ``version``."""
        out: dict[str, Any] = {**self.extra}
        if self.gate is not None:
            out["gate"] = self.gate
        if self.problems is not None:
            out["problems"] = self.problems
        out["budgets"] = {str(n): s.to_dict() for n, s in sorted(self.budgets.items())}
        if self.bins is not None:
            out["bins"] = self.bins.to_dict()
        if self.default_mode is not None:
            out["default_mode"] = self.default_mode
        if self.levels is not None:
            out["levels"] = self.levels.to_dict()
        out["version"] = self.version
        return out

    def fitted_budget(self, n: int) -> int | None:
        """The largest fitted N within a budget of ``n`` generations (None: none is)."""
        within = [b for b in self.budgets if b <= n]
        return max(within) if within else None

    def online_default_mode(self, *, level_model: bool) -> str:
        """What ``cascade=True`` runs: :func:`default_mode` over what this plan has, the level plans
        counting only where the artifact has the level model that predicts a question's level."""
        return default_mode(levels=self.levels is not None and level_model, bins=self.bins is not None,
                            level_preferred=(self.default_mode or "level") == "level")


def plans_from_manifest(manifest: Mapping[str, Any]) -> dict[str, CascadePlan]:
    """Every pair's plan in a manifest (``manifest["cascade"]``; none: ``{}``)."""
    return {pair: CascadePlan.from_dict(d) for pair, d in (manifest.get("cascade") or {}).items()}


def plans_to_manifest(plans: Mapping[str, CascadePlan]) -> dict[str, dict[str, Any]]:
    """``manifest["cascade"]`` for every pair's plan."""
    return {pair: plan.to_dict() for pair, plan in plans.items()}


__all__ = ["BinnedPlans", "CASCADE_MODES", "CascadePlan", "DEFAULT_GATE", "LevelPlans", "MODE_ALIASES",
           "PLAN_VERSION", "PlanError", "RouterGate", "StagePlan", "canonical_mode", "default_mode",
           "plans_from_manifest", "plans_to_manifest"]
