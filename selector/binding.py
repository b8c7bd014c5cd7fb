"""Binding a router to its pair's models: which spec to load, and refusing a model it was not trained for.

A router's predictions are only as good as the match between the models it runs online and the ones
the sweep measured. So every policy and PRM the :class:`~ttsopt.selector.router.Router` is given or
loads is checked against the artifact's record of the trained ones (name and parameter count, from
the sweep's model fingerprints in ``manifest["search"][pair]["models"]``, else the catalogue's
descriptors), unless the caller vouches for a renamed copy (``check_models=False``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Mapping

from .features import policy_descriptor
from .records import RouterError

_BACKEND_PREFIX = re.compile(r"^(?:llamacpp|hf|vllm|openai|judge):")
#: What a search needs recorded to run online as the sweep ran it.
SEARCH_FIELDS = ("temperature", "max_tokens", "step_max_tokens")


def base_name(name: str) -> str:
    """A model's name without the engine prefix: ``llamacpp:smollm2-135m`` and ``smollm2-135m`` are one model."""
    s = str(name)
    while _BACKEND_PREFIX.match(s):
        s = _BACKEND_PREFIX.sub("", s, count=1)
    return policy_descriptor(s, 1)["policy_name"] if s else s


def close(a: int, b: int) -> bool:
    """Parameter counts equal up to rounding (a count recorded as 10 ** log10 is not exact)."""
    return abs(int(a) - int(b)) <= 1e-6 * max(abs(int(a)), abs(int(b)), 1)


def trained_model(search: Mapping[str, Any] | None, entry: Mapping[str, Any],
                  role: str) -> tuple[str | None, int | None]:
    """(name, parameters) of the ``role`` (``"policy"`` | ``"prm"``) model the artifact was trained with,
    from the sweep's fingerprints where recorded, else from the catalogue entry's descriptors."""
    fp = ((search or {}).get("models") or {}).get(role)
    if fp:
        return fp.get("name"), int(fp["num_parameters"])
    params = entry.get(f"{role}_params")
    if params is None:
        log10 = entry["descriptors"].get(f"{role}_log10_params")
        params = None if log10 is None or (role == "prm" and log10 == 0) else int(round(10 ** log10))
    return None, params


def check_policy(policy: Any, *, pair: str, entry: Mapping[str, Any], search: Mapping[str, Any] | None) -> None:
    """RouterError unless ``policy`` is the pair's trained policy (its name, and its parameter count if known)."""
    name, params = trained_model(search, entry, "policy")
    name = name or entry["policy"]
    got = int(policy.num_parameters)
    if base_name(policy.name) != base_name(name) or (params is not None and not close(got, params)):
        raise RouterError(f"pair {pair}: this router was trained for the policy {name!r} "
                          f"({params if params is not None else '?'} parameters), not {policy.name!r} "
                          f"({got} parameters)")


def check_prm(prm: Any, *, pair: str, entry: Mapping[str, Any], search: Mapping[str, Any] | None) -> None:
    """RouterError unless ``prm`` is of the trained PRM's family (where its name says one) and its size."""
    from ttsopt.search.registry import PRM_FAMILIES

    _, params = trained_model(search, entry, "prm")
    spec = entry["prm"]
    got = int(prm.num_parameters)
    family = spec.partition(":")[0]
    got_family = str(prm.name).partition(":")[0]
    wrong_family = got_family in PRM_FAMILIES and got_family != family
    if wrong_family or (params is not None and not close(got, params)):
        raise RouterError(f"pair {pair}: this router was trained for the PRM {spec!r} "
                          f"({params if params is not None else '?'} parameters), not {prm.name!r} "
                          f"({got} parameters)")


def model_spec(trained_spec: str, override: str | None, engine: str) -> str:
    """The spec to load: the caller's ``override`` as given, else the trained spec moved onto a local
    ``engine`` (``transformers`` | ``llamacpp``: presets and GGUF files exist on both)."""
    if override is not None:
        return override
    if engine in ("transformers", "llamacpp"):
        from ttsopt.search.registry import on_engine

        return on_engine(trained_spec, engine)
    return trained_spec


def load_model(load: Callable[[], Any], *, what: str, spec: str, pair: str, engine: str) -> Any:
    """``load()``, its failures (a missing extra, a missing file) as one RouterError that names the model."""
    try:
        return load()
    except (ImportError, OSError, RuntimeError, ValueError, KeyError) as e:
        raise RouterError(f"pair {pair}: cannot load its {what} {spec!r} (engine {engine}): {e}") from e


def load_policy(entry: Mapping[str, Any], *, override: str | None, engine: str, device: str, pair: str) -> Any:
    """The pair's policy, loaded (not yet checked)."""
    from ttsopt.search.registry import load_policy as load

    spec = model_spec(entry["policy"], override, engine)
    return load_model(lambda: load(spec, device=device), what="policy", spec=spec, pair=pair, engine=engine)


def load_prm(entry: Mapping[str, Any], *, override: str | None, engine: str, device: str, pair: str) -> Any:
    """The pair's PRM, loaded (not yet checked)."""
    from ttsopt.search.registry import load_prm as load

    spec = model_spec(entry["prm"], override, engine)
    return load_model(lambda: load(spec, device=device), what="PRM", spec=spec, pair=pair, engine=engine)


def check_engine(engine: str | None) -> None:
    """RouterError for an engine name the registry does not know (None: the sweep's engine)."""
    if engine is None:
        return
    from ttsopt.search.registry import check_engine as check

    try:
        check(engine)
    except ValueError as e:
        raise RouterError(str(e)) from None


def search_settings(search: Mapping[str, Any] | None, *, path: Path, pair: str) -> Mapping[str, Any]:
    """The pair's recorded search settings, or a RouterError saying how to get them (artifacts trained
    before ``manifest["search"]`` existed lack them)."""
    missing = [f for f in SEARCH_FIELDS if not search or search.get(f) is None]
    if missing:
        raise RouterError(f"{path}: the artifact does not record how pair {pair}'s searches ran "
                          f"({', '.join(missing)} missing; trained before manifest['search'] existed): retrain "
                          "it with `ttsopt train`, or pass search={...} to Router.load")
    return search


__all__ = ["SEARCH_FIELDS", "base_name", "check_engine", "check_policy", "check_prm", "close", "load_model",
           "load_policy", "load_prm", "model_spec", "search_settings", "trained_model"]
