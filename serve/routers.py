"""The models one service answers for: every pair of one router, each its own OpenAI model.

A router trained on several (policy, PRM) pairs decides for one pair at a time
(``Router.load(path, pair=...)``). ``ttsopt serve`` serves all of them from one process:

* one pair (the router has one, or ``--pair`` chose it): the model id is the router's folder name,
  as it always was (``router``); ``router/PAIR`` is accepted too, and a request without
  ``model`` gets it;
* several pairs: one model per pair, ``router/PAIR`` (e.g. ``router/smollm2-135m+calc``), each listed
  in ``/v1/models``; a request must name one (400 otherwise, listing them).

Every pair's :class:`~ttsopt.selector.router.Router` is built at start-up (it reads the artifact
and checks the pair's entry: cheap, and a broken artifact fails before the port opens), but its
models -- policy, PRM, encoder -- load on the pair's first request, as a Router always does. All
pairs share the service's one model thread (one call at a time on the CPU).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

#: the question a warm-up solves (the models load; the answer is thrown away)
WARMUP_QUESTION = "What is 1 + 1?"


class ModelRefusal(Exception):
    """A ``model`` field the service cannot answer for: 404 (not served) or 400 (several served, none named)."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class ServedRouters:
    """Model id -> the router (one pair) that answers it. Build it with :func:`load_served` or
    :meth:`of` (one router object: the tests' fakes, a caller's own Router)."""

    def __init__(self, name: str, routers: Mapping[str, Any]) -> None:
        if not routers:
            raise ValueError("a service needs at least one pair")
        self.name = str(name)
        self.routers: dict[str, Any] = dict(routers)
        self.pairs = list(self.routers)
        if self.single:
            self.ids = {self.name: self.pairs[0], f"{self.name}/{self.pairs[0]}": self.pairs[0]}
            self.listed = [self.name]
        else:
            self.ids = {self.model_id(p): p for p in self.pairs}
            self.listed = list(self.ids)
        self.warm_seconds: float | None = None

    @classmethod
    def of(cls, router: Any) -> "ServedRouters":
        """One router object (anything with ``name``, ``pair``, ``route_many`` and ``solve_many``) as a service."""
        if isinstance(router, ServedRouters):
            return router
        pair = getattr(router, "pair", None) or (list(getattr(router, "pairs", None) or []) or ["default"])[0]
        return cls(str(router.name), {str(pair): router})

    @property
    def single(self) -> bool:
        return len(self.routers) == 1

    @property
    def pair(self) -> str | None:
        """The pair when one is served, else None."""
        return self.pairs[0] if self.single else None

    def model_id(self, pair: str) -> str:
        return self.name if self.single else f"{self.name}/{pair}"

    def resolve(self, model: str | None) -> tuple[str, Any]:
        """(the model id a response names, its router) for a request's ``model`` field."""
        if model is None or (model == self.name and not self.single):
            if self.single:
                return self.name, self.routers[self.pairs[0]]
            raise ModelRefusal(400, f"model: this server serves {len(self.listed)} models, one per pair; name one "
                                    f"of {self._names()}", "BadRequestError")
        pair = self.ids.get(model)
        if pair is None:
            raise ModelRefusal(404, f"model {model[:200]!r} is not served here; this server serves {self._names()}",
                               "NotFoundError")
        return self.model_id(pair), self.routers[pair]

    def _names(self) -> str:
        return ", ".join(repr(i) for i in self.listed)

    def describe(self) -> str:
        """What a start-up line says: ``router tiny (scripted+calc)`` or ``router r: 3 models (...)``."""
        if self.single:
            return f"router {self.name} ({self.pairs[0]})"
        return f"router {self.name}: {len(self.listed)} models ({', '.join(self.listed)}), loaded on first request"

    def warm(self) -> float | None:
        """Solve one question on a single-pair service so its models load now; the seconds it took.

        With several pairs nothing is loaded (each loads on its first request) and None is returned.
        """
        if not self.single:
            log.info("%d pairs served: each pair's models load on its first request (no warm-up)", len(self.pairs))
            return None
        from ttsopt.selector.records import Budget

        started = time.perf_counter()
        self.routers[self.pairs[0]].solve_many([WARMUP_QUESTION], Budget(n=1))
        self.warm_seconds = time.perf_counter() - started
        return self.warm_seconds


def load_served(path: str | Path, *, pair: str | None = None, policy_spec: str | None = None,
                prm_spec: str | None = None, warmup: bool = False,
                load: Callable[..., Any] | None = None, **options: Any) -> ServedRouters:
    """Every pair of the router at ``path`` (only ``pair`` when given) as one service.

    ``options`` go to ``Router.load`` for each pair (``engine``, ``device``, ``seed``, ...).
    ``policy_spec`` / ``prm_spec`` (``--policy`` / ``--prm``) run one pair's models elsewhere, so with
    several pairs they need ``pair``. ``warmup`` solves one question on a single-pair service (see
    :meth:`ServedRouters.warm`). Errors are ``RouterError`` with a one-line reason (the CLI prints it).
    ``load`` replaces ``Router.load`` (tests).
    """
    from ttsopt.selector.router import Router, RouterError

    load = load or Router.load
    specs = {k: v for k, v in (("policy_spec", policy_spec), ("prm_spec", prm_spec)) if v is not None}
    if pair is not None:
        pairs = [pair]
    else:
        pairs = artifact_pairs(path)
        if len(pairs) > 1 and specs:
            raise RouterError(f"{path}: --policy/--prm name one pair's models, and this router has {len(pairs)} "
                              f"pairs ({', '.join(pairs)}): give --pair too")
    routers = {p: load(path, pair=p, **specs, **options) for p in pairs}
    name = str(next(iter(routers.values())).name)
    served = ServedRouters(name, routers)
    if warmup:
        served.warm()
    return served


def artifact_pairs(path: str | Path) -> list[str]:
    """The pairs a router artifact was trained on (RouterError with the reason if it is not one)."""
    from ttsopt.selector.artifact import ArtifactError, load_artifact
    from ttsopt.selector.router import RouterError

    try:
        pairs = list(load_artifact(path).catalogue)
    except ArtifactError as e:
        raise RouterError(str(e)) from None
    if not pairs:
        raise RouterError(f"{path}: the router's catalogue has no pairs")
    return pairs


__all__ = ["ModelRefusal", "ServedRouters", "WARMUP_QUESTION", "artifact_pairs", "load_served"]
