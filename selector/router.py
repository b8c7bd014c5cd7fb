"""The online router: a question and a budget in, the strategy to run (and, with ``solve``, its answer) out.

A :class:`Router` wraps a router artifact (``ttsopt train``'s directory) for one (policy, PRM)
pair. For a question it computes the same model inputs the selector was trained on (text
statistics, the MiniLM embedding reduced by the artifact's PCA, a live probe where the artifact
uses probes, the pair's and every strategy's descriptors; ``selector/rows.py`` builds them for
the offline table too), predicts every catalogue strategy's accuracy with the LightGBM model and
picks one with the rules of ``selector/decide.py``.

Budgets (:class:`Budget`): ``n`` (generations: strategies with N <= n, the paper's axis; a probe's
samples are not counted on it), ``tokens`` or ``flops`` (the catalogue's expected compute per
problem, the probe included), or ``target_accuracy`` (the cheapest strategy predicted to reach it,
in expected tokens).

Probe reuse (``reuse_probe=True``, the default): a probe's samples are draws of the pool the
pooled strategies sample from (same prompt, temperature and token limit; its own seed), so

- ``majority:n=N`` and ``best_of_n:n=N`` take ``r = min(N, k)`` of the probe's samples as part of
  their N (the first r; Best-of-N reuses their PRM step scores too, the probe being scored by the
  pair's PRM) and draw only ``N - r`` more. Their expected cost is then the probe's plus the
  catalogue's generated (and PRM) tokens for ``N - r`` samples, not the catalogue's whole cost on
  top of the probe's; :class:`Candidate` ``total_tokens`` / ``total_flops`` say so.
- ``cot`` cannot: it is greedy, the probe samples at the sweep's temperature.
- ``beam`` and ``dvts`` do not: their first depth samples single steps (stopped at the step
  delimiter and capped at ``step_max_tokens``); a probe sample cut at its first step has that
  distribution only when the step fits in ``step_max_tokens`` tokens, which the text alone cannot
  tell without the engine's token ids, and the tree runner has no entry for pre-drawn steps.

One caveat, which is why reuse can be turned off: the selector's labels were measured with pool
samples independent of the probe. Over questions a reused sample is an ordinary draw, but given the
probe's features (which the choice depended on) the reused vote is not independent of them, so
the predicted accuracy of a reusing strategy is an estimate made under independence.

Engines: the pair's models load from their specs on the sweep's engine (``manifest["search"]``),
or ``engine="transformers" | "llamacpp"`` moves presets and GGUF files between the local engines
(``registry.on_engine``); ``policy_spec="openai:URL#MODEL"`` or ``"vllm:MODEL"`` runs the policy on
an OpenAI-compatible server or vLLM. Whatever runs must be the model the artifact was trained for
(name and parameter count, from the sweep's model fingerprints) unless ``check_models=False``.

Seeds: one seeded call per batch for the probe and per strategy for the search (the sweep seeds
per chunk likewise), so a question's samples can depend on the batch it came in. Policy and PRM
calls are serialised by a lock (the local engines are not thread-safe); routing without a probe
takes no model lock.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ttsopt.data.problem import question_key

from . import decide
from .records import Budget, Candidate, Decision, RouterError, Solution
from .features import TEXT_COLUMNS, Embedder, policy_descriptor
from .pipeline import CATEGORICAL, PAIR_FEATURES, PROBE_FEATURES, STRATEGY_FEATURES
from .rows import RAW_EMB_PREFIX, candidate_frame, text_matrix

#: Methods whose N samples are i.i.d. draws of one pool, so a probe's samples can be among them.
REUSING_METHODS = ("majority", "best_of_n")
#: How the verify-first cascade escalates (``Router.solve(..., cascade=...)``); ``True`` is ``"level"``
#: where the artifact has a level model and level plans (training data with levels), else ``"binned"``
#: where it has bins (routers trained without probes), else ``"fitted"``.
CASCADE_MODES = ("level", "binned", "fitted", "router")
#: What a question's cascade trace says of the plan it got, per mode.
_PLAN_TRACE = {"binned": ("bin", "predicted_cot_accuracy"), "level": ("level", "level_probability", "level_plan")}
#: Raw embeddings kept in memory per router (questions repeat in production traffic).
EMBEDDING_CACHE_SIZE = 4096
_BACKEND_PREFIX = re.compile(r"^(?:llamacpp|hf|vllm|openai|judge):")


# --------------------------------------------------------------------------- helpers


def _base_name(name: str) -> str:
    """A model's name without the engine prefix: ``llamacpp:smollm2-135m`` and ``smollm2-135m`` are one model."""
    s = str(name)
    while _BACKEND_PREFIX.match(s):
        s = _BACKEND_PREFIX.sub("", s, count=1)
    return policy_descriptor(s, 1)["policy_name"] if s else s


@dataclass
class _Probe:
    """A live probe of one question: the samples (for reuse), its row and its cost."""

    samples: Any  # selector.probe.Probe
    row: dict[str, float]
    seed: int

    def to_dict(self, k: int) -> dict[str, Any]:
        p = self.samples
        gen = sum(s.tokens for s in p.samples[:k])
        return {"k": k, "seed": self.seed, "answers": [s.answer for s in p.samples[:k]],
                "tokens": self.row["probe_cost_tokens"], "flops": self.row["probe_cost_flops"],
                "prompt_tokens": p.prompt_tokens, "generated_tokens": gen,
                "prm_tokens": sum(p.prm_tokens[:k]) if p.prm_tokens is not None else 0,
                "samples": [{**s.to_dict(), "step_scores": (p.step_scores[i] if p.step_scores is not None else None)}
                            for i, s in enumerate(p.samples[:k])]}


# --------------------------------------------------------------------------- the router


class Router:
    """A router artifact bound to one pair; see the module docstring. Build it with :meth:`load`."""

    def __init__(self, artifact: Any, path: Path, pair: str, *, engine: str | None = None, device: str = "cpu",
                 policy: Any = None, prm: Any = None, encoder: Callable | None = None,
                 policy_spec: str | None = None, prm_spec: str | None = None, search: dict | None = None,
                 reuse_probe: bool = True, seed: int = 0, embedding_cache: int = EMBEDDING_CACHE_SIZE,
                 check_models: bool = True) -> None:
        self.artifact = artifact
        self.path = Path(path)
        self.name = self.path.name
        self.pairs = list(artifact.catalogue)
        if pair not in artifact.catalogue:
            raise RouterError(f"unknown pair {pair!r}; this router knows {', '.join(self.pairs)}")
        self.pair = pair
        self.entry = artifact.catalogue[pair]
        self.pipeline = artifact.pipeline
        self.booster = artifact.booster
        self.device = device
        self.reuse_probe = bool(reuse_probe)
        self.seed = int(seed)
        self.search = search if search is not None else (artifact.manifest.get("search") or {}).get(pair)
        self.engine = engine or (self.search or {}).get("engine") or "transformers"
        self.policy_spec = policy_spec
        self.prm_spec = prm_spec
        self.check_models = bool(check_models)
        settings = artifact.manifest.get("settings") or {}
        self.probe_k: int | None = settings.get("probe_k") if self.pipeline.probes else None
        if self.pipeline.probes and not self.probe_k:
            raise RouterError(f"{path}: the feature pipeline uses probes but the manifest names no probe_k")
        self._policy, self._prm = policy, prm
        self._encoder = encoder
        self._embedder: Embedder | None = None
        self._emb_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._emb_cache_size = int(embedding_cache)
        self._load_lock = threading.RLock()
        self._model_lock = threading.RLock()
        self._emb_lock = threading.Lock()
        if policy is not None:
            self._check_policy(policy)
        if prm is not None:
            self._check_prm(prm)
        self._prepare()

    # -- loading ------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, *, pair: str | None = None, engine: str | None = None, device: str = "cpu",
             policy: Any = None, prm: Any = None, encoder: Callable | None = None, **options: Any) -> "Router":
        """Load a router directory for one pair.

        ``pair`` defaults to the only pair (an error names the choices if there are several).
        ``policy`` / ``prm`` / ``encoder`` may be injected (tests, or a caller who holds the models);
        otherwise they are loaded on first use: the encoder on the first route (only if the artifact
        uses embeddings), the policy and PRM on the first solve, or the first route if it probes.
        ``engine`` (``transformers`` | ``llamacpp``) moves preset and GGUF models between the local
        engines; ``policy_spec=`` / ``prm_spec=`` run the pair's models elsewhere (``openai:URL#MODEL``,
        ``vllm:MODEL``); the model must still be the one the artifact was trained for. Other options:
        ``search`` (a pair's search settings, for artifacts older than ``manifest["search"]``),
        ``reuse_probe`` (default True), ``seed`` (default 0), ``embedding_cache`` (questions whose raw
        embedding is kept, LRU; 0 turns it off), ``check_models`` (default True: a policy or PRM whose
        name or parameter count is not the trained one's is refused; False when the caller vouches for a
        renamed copy, e.g. the same weights behind vLLM under their hub name).
        """
        from .artifact import ArtifactError, load_artifact

        try:
            artifact = load_artifact(path)
        except ArtifactError as e:
            raise RouterError(str(e)) from None
        pairs = list(artifact.catalogue)
        if pair is None:
            if len(pairs) != 1:
                raise RouterError(f"{path}: this router has {len(pairs)} pairs; choose one with pair= "
                                  f"(--pair): {', '.join(pairs)}")
            pair = pairs[0]
        if engine is not None:
            from ttsopt.search.registry import check_engine

            try:
                check_engine(engine)
            except ValueError as e:
                raise RouterError(str(e)) from None
        return cls(artifact, Path(path), pair, engine=engine, device=device, policy=policy, prm=prm,
                   encoder=encoder, **options)

    def _search_settings(self) -> dict[str, Any]:
        s = self.search
        missing = [f for f in ("temperature", "max_tokens", "step_max_tokens") if not s or s.get(f) is None]
        if missing:
            raise RouterError(f"{self.path}: the artifact does not record how pair {self.pair}'s searches ran "
                              f"({', '.join(missing)} missing; trained before manifest['search'] existed): retrain "
                              "it with `ttsopt train`, or pass search={...} to Router.load")
        return s

    @property
    def policy(self) -> Any:
        if self._policy is None:
            with self._load_lock:
                if self._policy is None:
                    from ttsopt.search.registry import load_policy, on_engine

                    spec = self.policy_spec or self.entry["policy"]
                    if self.policy_spec is None and self.engine in ("transformers", "llamacpp"):
                        spec = on_engine(spec, self.engine)
                    policy = self._load_model(lambda: load_policy(spec, device=self.device), "policy", spec)
                    self._check_policy(policy)
                    self._policy = policy
        return self._policy

    @property
    def prm(self) -> Any:
        if self._prm is None:
            with self._load_lock:
                if self._prm is None:
                    from ttsopt.search.registry import load_prm, on_engine

                    spec = self.prm_spec or self.entry["prm"]
                    if self.prm_spec is None and self.engine in ("transformers", "llamacpp"):
                        spec = on_engine(spec, self.engine)
                    prm = self._load_model(lambda: load_prm(spec, device=self.device), "PRM", spec)
                    self._check_prm(prm)
                    self._prm = prm
        return self._prm

    def _load_model(self, load: Callable[[], Any], what: str, spec: str) -> Any:
        try:
            return load()
        except (ImportError, OSError, RuntimeError, ValueError, KeyError) as e:
            raise RouterError(f"pair {self.pair}: cannot load its {what} {spec!r} (engine {self.engine}): "
                              f"{e}") from e

    def _trained(self, role: str) -> tuple[str | None, int | None]:
        """(name, parameters) of the model the artifact was trained with, from the sweep's fingerprints
        where recorded, else from the catalogue's descriptors."""
        models = (self.search or {}).get("models") or {}
        fp = models.get(role)
        if fp:
            return fp.get("name"), int(fp["num_parameters"])
        params = self.entry.get(f"{role}_params")
        if params is None:
            log10 = self.entry["descriptors"].get(f"{role}_log10_params")
            params = None if log10 is None or (role == "prm" and log10 == 0) else int(round(10 ** log10))
        return None, params

    def _check_policy(self, policy: Any) -> None:
        if not self.check_models:
            return
        name, params = self._trained("policy")
        name = name or self.entry["policy"]
        got = int(policy.num_parameters)
        if _base_name(policy.name) != _base_name(name) or (params is not None and not _close(got, params)):
            raise RouterError(f"pair {self.pair}: this router was trained for the policy {name!r} "
                              f"({params if params is not None else '?'} parameters), not {policy.name!r} "
                              f"({got} parameters)")

    def _check_prm(self, prm: Any) -> None:
        if not self.check_models:
            return
        name, params = self._trained("prm")
        spec = self.entry["prm"]
        got = int(prm.num_parameters)
        family = spec.partition(":")[0]
        got_family = str(prm.name).partition(":")[0]
        from ttsopt.search.registry import PRM_FAMILIES

        wrong_family = got_family in PRM_FAMILIES and got_family != family
        if wrong_family or (params is not None and not _close(got, params)):
            raise RouterError(f"pair {self.pair}: this router was trained for the PRM {spec!r} "
                              f"({params if params is not None else '?'} parameters), not {prm.name!r} "
                              f"({got} parameters)")

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            with self._load_lock:
                if self._embedder is None:
                    from .features import MINILM_NAME, minilm_encoder

                    encoder = self._encoder or minilm_encoder(self.device)
                    name = (self.pipeline.pca.encoder if self.pipeline.pca is not None else "") or MINILM_NAME
                    self._embedder = Embedder(encoder, name)
        return self._embedder

    def warm(self, *, models: bool = False) -> "Router":
        """Load now what the first call would load: the encoder (if the artifact embeds), and the policy and
        PRM if ``models`` or if routing probes. So that a first decision's time is a decision's."""
        if models or self._probe_cols:  # first, as routing does: a missing model fails before the encoder loads
            self.policy, self.prm  # noqa: B018 (properties that load)
        if self.n_emb:
            self._encode(["What is 1 + 1?"])
        return self

    # -- precomputed per pair -------------------------------------------------------------

    def _prepare(self) -> None:
        """The parts of the model's input that do not depend on the question, as a numpy block."""
        from ttsopt.search.strategy import Strategy

        strategies = self.entry["strategies"]
        self.keys = [s["key"] for s in strategies]
        self.strategies = [Strategy.from_key(k) for k in self.keys]
        self.n = np.array([s["n"] for s in strategies], dtype=np.int64)
        self.cat_tokens = np.array([s["tokens"] for s in strategies], dtype=float)
        self.cat_flops = np.array([s["flops"] for s in strategies], dtype=float)
        columns = self.pipeline.columns
        self.columns = columns
        self.n_emb = self.pipeline.pca.n_components if self.pipeline.pca is not None else 0
        self._probe_cols = list(PROBE_FEATURES) if self.pipeline.probes else []
        self._q_width = len(TEXT_COLUMNS) + self.n_emb + len(self._probe_cols)
        desc = self.entry["descriptors"]
        from .features import strategy_descriptor

        static = np.empty((len(self.keys), len(columns) - self._q_width))
        for i, key in enumerate(self.keys):
            values = {**desc, **strategy_descriptor(key)}
            for j, c in enumerate([*PAIR_FEATURES, *STRATEGY_FEATURES]):
                static[i, j] = self._code(c, values[c]) if c in CATEGORICAL else float(values[c])
        self._static = static
        assert columns[self._q_width:] == [*PAIR_FEATURES, *STRATEGY_FEATURES]
        # what a reusing strategy still has to generate and score, per sample of its N
        split = all(k in s for s in strategies for k in ("generated_tokens", "prm_tokens"))
        self._reusable = np.array([self.reuse_probe and split and self.pipeline.probes
                                   and st.method in REUSING_METHODS for st in self.strategies])
        if split:
            policy_params = self.entry.get("policy_params") or self._trained("policy")[1] or 0
            prm_params = self.entry.get("prm_params") or self._trained("prm")[1] or 0
            uses = np.array([st.uses_prm for st in self.strategies], dtype=float)
            gen = np.array([s["generated_tokens"] for s in strategies], dtype=float) / self.n
            prm_t = np.array([s["prm_tokens"] for s in strategies], dtype=float) * uses / self.n
            self._per_sample_tokens = gen + prm_t
            self._per_sample_flops = 2.0 * policy_params * gen + 2.0 * prm_params * prm_t
        else:
            self._per_sample_tokens = self._per_sample_flops = np.zeros(len(self.keys))

    def _code(self, column: str, value: Any) -> float:
        cats = self.pipeline.categories[column]
        try:
            return float(cats.index(str(value)))
        except ValueError:
            return math.nan  # unseen category: LightGBM's missing value, as the pandas path encodes it

    # -- features ---------------------------------------------------------------------------

    def _raw_embeddings(self, questions: Sequence[str]) -> np.ndarray:
        """Raw (n, d) float32 embeddings, encoding only the questions the in-memory LRU cache lacks."""
        with self._emb_lock:
            todo = [q for q in dict.fromkeys(questions) if q not in self._emb_cache]
        fresh = dict(zip(todo, self._encode(todo))) if todo else {}
        if self._emb_cache_size:
            with self._emb_lock:
                self._emb_cache.update(fresh)
                found = {q: self._emb_cache[q] for q in questions}
                for q in found:  # most recently used last
                    self._emb_cache.move_to_end(q)
                while len(self._emb_cache) > self._emb_cache_size:
                    self._emb_cache.popitem(last=False)
        else:
            found = fresh
        return np.stack([found[q] for q in questions])

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        try:
            fresh = self.embedder.encode(list(texts))
        except ImportError as e:
            raise RouterError(f"the question encoder is not available: {e}") from e
        if fresh.shape[1] != self.pipeline.pca.input_dim:
            raise RouterError(f"the encoder gives {fresh.shape[1]}-d vectors; this router's PCA takes "
                              f"{self.pipeline.pca.input_dim}-d ones (another encoder than the one it was "
                              "trained with)")
        return fresh

    def _probes(self, questions: Sequence[str]) -> list[_Probe]:
        from ttsopt.search.methods import derive_seed

        from .probe import probe_row, probe_seed, sample_probe, score_probe

        s = self._search_settings()
        probe = s.get("probe") or {}
        k = int(self.probe_k)
        seed = probe_seed(self.seed, int(probe.get("seed") or 0), derive_seed(0, *map(question_key, questions)))
        with self._model_lock:
            drawn = sample_probe(self.policy, questions, k, temperature=float(s["temperature"]),
                                 max_tokens=int(s["max_tokens"]), seed=seed)
            scored = score_probe(self.prm, questions, drawn)
        return [_Probe(p, probe_row(p, k), seed) for p in scored]

    def _question_block(self, questions: Sequence[str], raw: np.ndarray | None,
                        probes: Sequence[_Probe] | None) -> np.ndarray:
        """``(n_questions, q_width)``: txt_*, emb_*, probe_* in the pipeline's column order."""
        parts = [self._text_block(questions, raw)]
        if self._probe_cols:
            parts.append(np.array([[p.row[c] for c in self._probe_cols] for p in probes], dtype=float))
        return np.hstack(parts)

    def _text_block(self, questions: Sequence[str], raw: np.ndarray | None) -> np.ndarray:
        """txt_* then emb_* (the PCA of ``raw``): the columns that need no probe."""
        parts = [text_matrix(questions)]
        if self.n_emb:
            parts.append(self.pipeline.pca.transform(raw))
        return np.hstack(parts)

    def model_inputs(self, block: np.ndarray) -> np.ndarray:
        """The fast path: ``(n_questions * n_strategies, n_columns)`` float64 rows in the pipeline's column
        order, categoricals as their category codes (what LightGBM makes of the pandas frame)."""
        q, s = block.shape[0], len(self.keys)
        x = np.empty((q * s, len(self.columns)))
        x[:, :self._q_width] = np.repeat(block, s, axis=0)
        x[:, self._q_width:] = np.tile(self._static, (q, 1))
        return x

    def model_frame(self, question: str, raw: np.ndarray | None, probe_row: dict | None):
        """The pandas path for one question: the offline table's columns for it (``selector/rows.py``), through
        :meth:`FeaturePipeline.transform`, exactly as training saw them. Slower; kept as the reference."""
        cols: dict[str, Any] = dict(zip(TEXT_COLUMNS, text_matrix([question])[0]))
        if raw is not None:
            cols.update({f"{RAW_EMB_PREFIX}{i}": v for i, v in enumerate(raw)})
        if probe_row is not None:
            cols.update({c: probe_row[c] for c in PROBE_FEATURES})
        return self.pipeline.transform(candidate_frame(cols, self.entry["descriptors"], self.keys))

    def predict(self, block: np.ndarray) -> np.ndarray:
        """``(n_questions, n_strategies)`` predicted accuracies from question blocks."""
        x = self.model_inputs(block)
        return self.booster.predict(x, num_threads=1).reshape(block.shape[0], len(self.keys))

    # -- routing ------------------------------------------------------------------------

    def _check_budget(self, budget: Budget) -> Budget:
        if not isinstance(budget, Budget):
            raise RouterError(f"budget must be a Budget, got {type(budget).__name__}")
        return budget

    def _costs(self, probes: Sequence[_Probe] | None, q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per question and strategy: expected total tokens and FLOPs (probe included, reuse deducted), and
        how many probe samples each strategy reuses."""
        tokens = np.broadcast_to(self.cat_tokens, (q, len(self.keys))).copy()
        flops = np.broadcast_to(self.cat_flops, (q, len(self.keys))).copy()
        reuse = np.zeros((q, len(self.keys)), dtype=np.int64)
        if probes:
            k = int(self.probe_k)
            pt = np.array([p.row["probe_cost_tokens"] for p in probes])[:, None]
            pf = np.array([p.row["probe_cost_flops"] for p in probes])[:, None]
            r = np.where(self._reusable, np.minimum(self.n, k), 0)
            new = self.n - r
            reused_tokens = pt + new * self._per_sample_tokens
            reused_flops = pf + new * self._per_sample_flops
            tokens = np.where(self._reusable, reused_tokens, tokens + pt)
            flops = np.where(self._reusable, reused_flops, flops + pf)
            reuse = np.broadcast_to(r, (q, len(self.keys))).copy()
        return tokens, flops, reuse

    def _decide(self, pred: np.ndarray, tokens: np.ndarray, flops: np.ndarray, budget: Budget,
                blocked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(chosen index per question, fits mask, reached or None); ``blocked`` strategies are never chosen."""
        if blocked is not None and blocked.any():
            tokens, flops = np.where(blocked, np.inf, tokens), np.where(blocked, np.inf, flops)
        kind = budget.kind
        if kind == "n":
            allowed = np.broadcast_to(self.n <= budget.n, pred.shape) & np.isfinite(tokens)
            idx = decide.within_budget(pred, np.where(allowed, tokens, np.inf), np.inf)
            return idx, allowed, None
        if kind in ("tokens", "flops"):
            cost = tokens if kind == "tokens" else flops
            fits = decide.fits(pred, cost, float(budget.value))
            return decide.within_budget(pred, cost, float(budget.value)), fits, None
        idx, reached = decide.for_target(pred, tokens, float(budget.target_accuracy))
        return idx, pred >= budget.target_accuracy - decide.TIE, reached

    def _features(self, questions: Sequence[str]) -> tuple[np.ndarray, list[_Probe] | None]:
        probes = self._probes(questions) if self._probe_cols else None  # a missing model fails before the encoder loads
        raw = self._raw_embeddings(questions) if self.n_emb else None
        return self._question_block(questions, raw, probes), probes

    def _route(self, questions: Sequence[str], budget: Budget,
               exclude: Sequence[str] = ()) -> tuple[list[Decision], list[_Probe] | None]:
        budget = self._check_budget(budget)
        questions = _check_questions(questions)
        if not questions:
            return [], None
        start = time.perf_counter()
        block, probes = self._features(questions)
        return self._route_block(questions, block, probes, budget, start, exclude), probes

    def route_features(self, questions: Sequence[str], block: np.ndarray, budget: Budget,
                       probes: Sequence[Any] | None = None) -> list[Decision]:
        """Decisions from precomputed question features: ``block`` is :meth:`question_features`' matrix
        (txt_*, emb_*, probe_* per question, in the pipeline's order). What a caller that computes or caches
        the features elsewhere pays per decision (benchmarks/decision_latency.py)."""
        budget = self._check_budget(budget)
        if block.shape != (len(questions), self._q_width):
            raise RouterError(f"features must be ({len(questions)}, {self._q_width}), got {block.shape}")
        if self._probe_cols and (probes is None or len(probes) != len(questions)):
            raise RouterError("this router uses probes: pass the probes question_features returned")
        return self._route_block(list(questions), block, probes, budget, time.perf_counter())

    def question_features(self, questions: Sequence[str]) -> tuple[np.ndarray, list[Any] | None]:
        """``(block, probes)``: every question's model inputs that depend on it (the probe runs here)."""
        return self._features(_check_questions(questions))

    def _route_block(self, questions, block, probes, budget, start, exclude: Sequence[str] = ()) -> list[Decision]:
        pred = self.predict(block)
        tokens, flops, reuse = self._costs(probes, len(questions))
        blocked = np.isin(np.array(self.keys), list(exclude)) if exclude else None
        idx, fits, reached = self._decide(pred, tokens, flops, budget, blocked)
        decisions = [self._decision(q, i, block[i], pred[i], tokens[i], flops[i], reuse[i], fits[i], int(idx[i]),
                                    None if reached is None else bool(reached[i]), budget,
                                    probes[i] if probes else None, 0.0)
                     for i, q in enumerate(questions)]
        share = (time.perf_counter() - start) / len(questions)
        for d in decisions:
            d.seconds = share
        return decisions

    def _decision(self, question, row, block_row, pred, tokens, flops, reuse, fits, idx, reached, budget, probe,
                  seconds) -> Decision:
        names = [*TEXT_COLUMNS, *(f"emb_{j}" for j in range(self.n_emb)), *self._probe_cols]
        candidates = [Candidate(k, st.method, int(st.n), float(pred[j]), float(self.cat_tokens[j]),
                                float(self.cat_flops[j]), bool(fits[j]), float(tokens[j]), float(flops[j]),
                                int(reuse[j]))
                      for j, (k, st) in enumerate(zip(self.keys, self.strategies))]
        chosen = idx if idx >= 0 else None
        return Decision(question=question, question_key=question_key(question), pair=self.pair, budget=budget,
                        strategy=self.keys[chosen] if chosen is not None else None,
                        predicted_accuracy=float(pred[chosen]) if chosen is not None else None,
                        reached=reached, candidates=candidates,
                        features={n: float(v) for n, v in zip(names, block_row)},
                        probe=probe.to_dict(int(self.probe_k)) if probe is not None else None, seconds=seconds)

    def route(self, question: str, budget: Budget) -> Decision:
        """The decision for one question under ``budget``."""
        return self.route_many([question], budget)[0]

    def route_many(self, questions: Sequence[str], budget: Budget) -> list[Decision]:
        """Decisions for many questions: one encoder call, one probe call, one prediction for all."""
        return self._route(questions, budget)[0]

    def allocate(self, questions: Sequence[str], total: Budget) -> list[Decision]:
        """One strategy per question maximising the summed predicted accuracy within one total budget.

        ``total.tokens`` / ``total.flops`` (expected compute, probes included) or ``total.n`` (generations
        in all). A candidate ``fits`` when it costs no more than its question's allocated strategy.
        """
        total = self._check_budget(total)
        if total.kind == "target_accuracy":
            raise RouterError("allocate takes a total budget (n, tokens or flops), not a target accuracy")
        questions = _check_questions(questions)
        if not questions:
            return []
        start = time.perf_counter()
        block, probes = self._features(questions)
        pred = self.predict(block)
        tokens, flops, reuse = self._costs(probes, len(questions))
        cost = {"n": np.broadcast_to(self.n.astype(float), pred.shape), "tokens": tokens, "flops": flops}[total.kind]
        try:
            idx = decide.allocate(pred, cost, float(total.value))
        except ValueError as e:
            raise RouterError(f"cannot allocate {total.kind} {total.value:g} over {len(questions)} questions: "
                              f"{e}") from None
        share = (time.perf_counter() - start) / len(questions)
        rows = np.arange(len(questions))
        fits = cost <= cost[rows, idx][:, None]
        return [self._decision(q, i, block[i], pred[i], tokens[i], flops[i], reuse[i], fits[i], int(idx[i]), None,
                               total, probes[i] if probes else None, share) for i, q in enumerate(questions)]

    # -- solving ------------------------------------------------------------------------

    def solve(self, question: str, budget: Budget, *, cascade: bool | str = False) -> Solution:
        """Route, then run the chosen search with the pair's policy and PRM: the answer, the decision, the
        trace and the compute actually spent (the probe's included). ``cascade``: verify first (see
        :meth:`solve_many`)."""
        return self.solve_many([question], budget, cascade=cascade)[0]

    def solve_many(self, questions: Sequence[str], budget: Budget | Sequence[Budget], *,
                   cascade: bool | str = False) -> list[Solution]:
        """Route and solve many questions; questions whose chosen strategies coincide run as one batched
        search call. ``budget`` is one for all or one per question.

        ``cascade`` runs the verify-first cascade fitted at training time (``manifest["cascade"]``,
        :mod:`ttsopt.train.cascade`) instead of the model's argmax: the greedy CoT, scored by the
        PRM, kept when its lowest step score reaches the fitted τ, else escalated. ``"level"``
        (``True`` where the artifact has level plans) takes τ and the escalation fitted for the level
        its level model predicts from the question's text (the measured best on the accuracy-against-
        compute curve: benchmarks/results/selector/arith-router-eval.md); ``"binned"`` (``True`` next)
        those fitted for the question's bin of the router's predicted CoT accuracy; ``"fitted"``
        (``True`` otherwise) the ones fitted for the budget; ``"router"`` routes a doubted question within the N - 1
        generations left and runs the choice only if its predicted accuracy beats keeping the CoT
        (the CoT's training accuracy where its check failed). It is fitted per budget N, so it
        takes a budget of ``n``.
        """
        questions = _check_questions(questions)
        if not questions:
            return []
        budgets = [budget] * len(questions) if isinstance(budget, Budget) else list(budget)
        if len(budgets) != len(questions):
            raise RouterError(f"{len(budgets)} budgets for {len(questions)} questions")
        start = time.perf_counter()
        if cascade:
            mode = cascade if cascade is not True else self.default_cascade_mode
            if mode not in CASCADE_MODES:
                raise RouterError(f"cascade must be True or one of {', '.join(CASCADE_MODES)}, got {cascade!r}")
            return self._solve_cascade(questions, [self._check_budget(b) for b in budgets], start, mode)
        decisions: list[Decision | None] = [None] * len(questions)
        probes: list[_Probe | None] = [None] * len(questions)
        groups: dict[Budget, list[int]] = {}
        for i, b in enumerate(budgets):
            groups.setdefault(self._check_budget(b), []).append(i)
        for b, members in groups.items():
            ds, ps = self._route([questions[i] for i in members], b)
            for j, i in enumerate(members):
                decisions[i] = ds[j]
                probes[i] = ps[j] if ps else None
        return self._solve_decided(questions, decisions, probes, start)

    # -- the verify-first cascade ---------------------------------------------------------

    @property
    def cascade(self) -> dict[str, Any] | None:
        """The pair's fitted cascade (per budget N: τ and the escalation strategy), or None."""
        return (self.artifact.manifest.get("cascade") or {}).get(self.pair)

    def cascade_plan(self, budget: Budget) -> dict[str, Any]:
        """The fitted choice for ``budget`` (that of the largest fitted N <= budget.n)."""
        entry = self.cascade
        if entry is None:
            raise RouterError(f"{self.path}: no cascade for {self.pair} (it needs the PRM's scores of the stored "
                              "CoTs at training time: free for a PRM without parameters, such as calc)")
        if budget.kind != "n":
            raise RouterError(f"the cascade is fitted per budget N (generations); got a budget of {budget.kind}")
        fitted = sorted(int(k) for k in entry["budgets"] if int(k) <= budget.n)
        if not fitted:
            raise RouterError(f"no cascade fitted for a budget of {budget.n} generations "
                              f"(fitted: {', '.join(sorted(entry['budgets'], key=int))})")
        return {"n": fitted[-1], **entry["budgets"][str(fitted[-1])]}

    @property
    def default_cascade_mode(self) -> str:
        """What ``cascade=True`` runs with this artifact (see :data:`CASCADE_MODES`): the mode training
        chose (``manifest["cascade"][pair]["default_mode"]``: the level plan where every level had enough
        problems), as far as the artifact has what it needs."""
        entry = self.cascade or {}
        level = bool(entry.get("levels")) and self.artifact.levels is not None
        wanted = entry.get("default_mode", "level")
        if level and wanted == "level":
            return "level"
        return "binned" if entry.get("bins") else "fitted"

    def _level_plans(self, questions: list[str], plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each question's plan for the level the artifact's level model predicts from its text
        (``manifest["cascade"][pair]["levels"]``); a level without a plan takes the budget's."""
        levels = (self.cascade or {}).get("levels")
        model = self.artifact.levels
        if not levels or model is None:
            raise RouterError(f"{self.path}: this router has no level plans (its training data had no levels, "
                              "or an older ttsopt trained it): use cascade='binned' or 'fitted', or retrain")
        # the text statistics and the embedding only: a router trained with probes runs no probe for this
        block = self._text_block(questions, self._raw_embeddings(questions) if self.n_emb else None)
        names = self.columns[:len(TEXT_COLUMNS) + self.n_emb]
        missing = [c for c in model.columns if c not in names]
        if missing:
            raise RouterError(f"{self.path}: the level model reads {missing}, which the feature pipeline lacks")
        level, prob = model.predict(block[:, [names.index(c) for c in model.columns]])
        out = []
        for plan, lv, pr in zip(plans, level, prob):
            fitted = levels["budgets"][str(plan["n"])].get(str(lv))
            out.append({**plan, **(fitted or {}), "level": str(lv), "level_probability": float(pr),
                        "level_plan": fitted is not None})
        return out

    def _binned_plans(self, questions: list[str], plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each question's plan for its bin of the router's predicted CoT accuracy (computed from its
        text before anything runs; ``manifest["cascade"][pair]["bins"]``)."""
        bins = (self.cascade or {}).get("bins")
        if not bins:
            raise RouterError(f"{self.path}: this router's cascade has no bins (trained with probes, or by an "
                              "older ttsopt): use cascade='fitted' or 'router', or retrain")
        block, _ = self._features(questions)
        score = self.predict(block)[:, self.keys.index("cot")]
        which = decide.bin_of(score, bins["edges"])
        return [{"n": plan["n"], **bins["budgets"][str(plan["n"])][int(b)], "bin": int(b),
                 "predicted_cot_accuracy": float(sc)} for plan, b, sc in zip(plans, which, score)]

    def _solve_cascade(self, questions: list[str], budgets: list[Budget], start: float,
                       mode: str) -> list[Solution]:
        from ttsopt.search.strategy import Strategy
        from ttsopt.search.types import split_steps

        s = self._search_settings()
        plans = [self.cascade_plan(b) for b in budgets]
        if mode == "binned":
            plans = self._binned_plans(questions, plans)
        elif mode == "level":
            plans = self._level_plans(questions, plans)
        taus = [p.get("router_tau" if mode == "router" else "tau") for p in plans]
        # the first answer and the PRM's check of it
        first: dict[int, tuple] = {}
        gated = [i for i, t in enumerate(taus) if t is not None]
        if gated:
            cot = self.strategies[self.keys.index("cot")]
            results = self._run_search([questions[i] for i in gated], cot, s)
            with self._model_lock:
                scored = self.prm.score([(questions[i], split_steps(r[1]["candidates"][0]["text"]))
                                         for i, r in zip(gated, results)])
            from ttsopt.search.compute import Compute

            prm_params = int(getattr(self.prm, "num_parameters", 0))
            for i, r, sc in zip(gated, results, scored):
                gate = float(min(sc.scores)) if len(sc.scores) else 0.0
                check = Compute()
                check.add_prm(int(sc.tokens), prm_params)
                first[i] = (r, gate, _compute_dict(check))
        doubted = [i for i in range(len(questions)) if i not in first or first[i][1] < taus[i]]
        # the escalation: the fitted strategy, or the router's choice within what is left of N
        second: dict[int, tuple] = {}
        declined: dict[int, dict] = {}
        if mode != "router":
            by_key: dict[str, list[int]] = {}
            for i in doubted:
                by_key.setdefault(plans[i]["escalate"], []).append(i)
            for key, members in by_key.items():
                # a rest-of-budget escalation (pooled, n = N - 1: train/rest.py) is not in the catalogue
                strategy = self.strategies[self.keys.index(key)] if key in self.keys else Strategy.from_key(key)
                results = self._run_search([questions[i] for i in members], strategy, s)
                second.update((i, (*r, None)) for i, r in zip(members, results))
        else:
            by_left: dict[tuple[Budget, bool], list[int]] = {}
            for i in doubted:
                by_left.setdefault((Budget(n=budgets[i].n - (1 if i in first else 0)), i in first), []).append(i)
            for (left, after_cot), members in by_left.items():
                # after the greedy CoT, never the greedy CoT again: the same answer (as train/cascade.py's _routed)
                ds, ps = self._route([questions[i] for i in members], left, exclude=("cot",) if after_cot else ())
                run = []
                for j, i in enumerate(members):
                    keep = plans[i]["keep_value"] if i in first else -math.inf
                    if ds[j].strategy is not None and ds[j].predicted_accuracy > keep:
                        run.append(j)
                    else:
                        declined[i] = {"predicted_accuracy": ds[j].predicted_accuracy, "keep_value": keep,
                                       "strategy": ds[j].strategy}
                sols = self._solve_decided([questions[members[j]] for j in run], [ds[j] for j in run],
                                           [ps[j] if ps else None for j in run], start)
                second.update((members[j], (x.answer, x.trace, x.compute, x.decision)) for j, x in zip(run, sols))
        out: list[Solution] = []
        for i, (q, b, plan) in enumerate(zip(questions, budgets, plans)):
            spent = {k: 0.0 for k in ("prompt_tokens", "generated_tokens", "prm_tokens", "tokens", "policy_flops",
                                      "prm_flops", "flops", "context_tokens")}
            trace: dict[str, Any] = {"cascade": {"mode": mode, "fitted_n": plan["n"], "tau": taus[i],
                                                 "escalate_to": plan["escalate"] if mode != "router" else "router",
                                                 **{k: plan[k] for k in _PLAN_TRACE.get(mode, ())}}}
            answer, decision = None, None
            if i in first:
                (answer, cot_trace, cot_compute), gate, check = first[i]
                for k in spent:
                    spent[k] += cot_compute.get(k, 0) + check[k]
                trace["cascade"].update({"gate": gate, "kept_first_answer": i not in second})
                trace["first"] = cot_trace
            if i in declined:
                trace["cascade"]["router_declined"] = declined[i]
            probe = None
            if i in second:
                answer, esc_trace, esc_compute, decision = second[i]
                for k in spent:
                    spent[k] += esc_compute.get(k, 0)
                probe = esc_compute.get("probe")
                trace["escalation"] = esc_trace
            if decision is None:
                strategy = plan["escalate"] if i in second else ("cot" if i in first else None)
                decision = Decision(q, question_key(q), self.pair, b, strategy, None, None, [], {}, None, 0.0)
            compute = {k: (float(v) if "flops" in k else int(v)) for k, v in spent.items()}
            out.append(Solution(answer, decision, trace, {**compute, "probe": probe},
                                (time.perf_counter() - start) / len(questions)))
        return out

    def _solve_decided(self, questions, decisions, probes, start) -> list[Solution]:
        s = self._search_settings()
        by_strategy: dict[str, list[int]] = {}
        for i, d in enumerate(decisions):
            by_strategy.setdefault(d.strategy or "", []).append(i)
        outs: list[tuple[str | None, dict, dict] | None] = [None] * len(questions)
        timing = [0.0] * len(questions)
        for key, members in by_strategy.items():
            t0 = time.perf_counter()
            qs = [questions[i] for i in members]
            ps = [probes[i] for i in members]
            if not key:
                results = [self._fallback(p) for p in ps]
            else:
                strategy = self.strategies[self.keys.index(key)]
                if ps[0] is not None and self._reusable[self.keys.index(key)]:
                    results = self._run_reusing(qs, ps, strategy, s)
                else:
                    results = self._run_search(qs, strategy, s)
            for i, p, r in zip(members, ps, results):
                answer, trace, compute = r
                outs[i] = (answer, trace, _with_probe(compute, p))
            spent = (time.perf_counter() - t0) / len(members)
            for i in members:
                timing[i] = spent
        return [Solution(answer=o[0], decision=d, trace=o[1], compute=o[2], seconds=d.seconds + timing[i])
                for i, (o, d) in enumerate(zip(outs, decisions))]

    def _search_seed(self, key: str, questions: Sequence[str]) -> int:
        from ttsopt.search.methods import derive_seed

        return derive_seed(self.seed, "solve", key, *map(question_key, questions))

    def _run_search(self, questions: Sequence[str], strategy: Any, s: dict) -> list[tuple]:
        from ttsopt.data.problem import Problem
        from ttsopt.search.run import run_search

        problems = [Problem(question_key(q), q, "") for q in questions]
        seed = self._search_seed(strategy.key, questions)
        with self._model_lock:
            results = run_search(problems, strategy, self.policy, self.prm if strategy.uses_prm else None, seed=seed,
                                 temperature=float(s["temperature"]), max_tokens=int(s["max_tokens"]),
                                 step_max_tokens=int(s["step_max_tokens"]), problem_batch_size=len(problems))
        out = []
        for r in results:
            trace = {"strategy": strategy.key, "method": strategy.method, "seed": seed, "reused_probe_samples": 0,
                     "candidates": [_candidate_dict(c) for c in r.candidates], "search": r.trace}
            out.append((r.answer, trace, _compute_dict(r.compute)))
        return out

    def _run_reusing(self, questions: Sequence[str], probes: Sequence[_Probe], strategy: Any, s: dict) -> list[tuple]:
        """Majority / Best-of-N with the probe's first ``min(N, k)`` samples as part of the N (see the module)."""
        from ttsopt.search.aggregate import aggregate_scores, extract, vote
        from ttsopt.search.compute import Compute
        from ttsopt.search.result import Candidate as SearchCandidate
        from ttsopt.search.types import SamplingParams, split_steps

        n, k = int(strategy.n), int(self.probe_k)
        r = min(n, k)
        seed = self._search_seed(strategy.key, questions)
        pools: list[list[Any]] = []
        computes = [Compute() for _ in questions]
        for p in probes:
            pool = []
            for j, sample in enumerate(p.samples.samples[:r]):
                cand = SearchCandidate(text=sample.text, steps=split_steps(sample.text), answer=sample.answer,
                                       finish_reason=sample.finish_reason)
                if strategy.uses_prm:
                    cand.step_scores = list(p.samples.step_scores[j])
                    cand.score = aggregate_scores(cand.step_scores, strategy.agg)
                pool.append(cand)
            pools.append(pool)
        fresh: list[list[Any]] = [[] for _ in questions]
        with self._model_lock:
            if n > r:
                policy = self.policy
                prompts = [policy.format_prompt(q) for q in questions]
                gens = policy.generate(prompts, SamplingParams(n=n - r, temperature=float(s["temperature"]),
                                                               max_tokens=int(s["max_tokens"]), seed=seed))
                if len(gens) != len(prompts):
                    raise RuntimeError(f"policy {policy.name!r} returned {len(gens)} generations for "
                                       f"{len(prompts)} prompts")
                for i, gen in enumerate(gens):
                    # the prompt was charged with the probe (one prompt per problem): only new tokens here
                    computes[i].add_policy(0, gen.generated_tokens, policy.num_parameters,
                                           context_tokens=gen.prompt_tokens)
                    fresh[i] = [SearchCandidate(text=c.text, steps=split_steps(c.text), answer=extract(c.text),
                                                finish_reason=c.finish_reason) for c in gen.completions]
                if strategy.uses_prm:
                    prm = self.prm
                    owners, items, targets = [], [], []
                    for i, (q, cands) in enumerate(zip(questions, fresh)):
                        for c in cands:
                            if c.steps:
                                owners.append(i)
                                items.append((q, c.steps))
                                targets.append(c)
                            else:
                                c.step_scores, c.score = [], aggregate_scores([], strategy.agg)
                    scored = prm.score(items) if items else []
                    for i, c, res in zip(owners, targets, scored):
                        c.step_scores = list(res.scores)
                        c.score = aggregate_scores(c.step_scores, strategy.agg)
                        computes[i].add_prm(res.tokens, prm.num_parameters)
        out = []
        for pool, new, compute in zip(pools, fresh, computes):
            cands = pool + new
            result = vote(cands, strategy.vote if strategy.uses_prm else "majority")
            trace = {"strategy": strategy.key, "method": strategy.method, "seed": seed, "reused_probe_samples": r,
                     "candidates": [{**_candidate_dict(c), "from_probe": j < r} for j, c in enumerate(cands)],
                     "search": {"vote": strategy.vote if strategy.uses_prm else "majority", "tally": result.tally,
                                "winner": result.winner}}
            out.append((result.answer, trace, _compute_dict(compute)))
        return out

    def _fallback(self, probe: _Probe | None) -> tuple:
        """Nothing fits the budget: answer with the probe's majority if a probe ran (already paid), else nothing."""
        from ttsopt.search.aggregate import vote
        from ttsopt.search.compute import Compute
        from ttsopt.search.result import Candidate as SearchCandidate

        if probe is None:
            return None, {"strategy": None, "fallback": "nothing fits the budget; nothing was run"}, \
                _compute_dict(Compute())
        k = int(self.probe_k)
        cands = [SearchCandidate(text=s.text, steps=[], answer=s.answer, finish_reason=s.finish_reason)
                 for s in probe.samples.samples[:k]]
        result = vote(cands, "majority")
        return result.answer, {"strategy": None, "fallback": "nothing fits the budget: the probe's majority answer",
                               "candidates": [_candidate_dict(c) for c in cands]}, _compute_dict(Compute())

    def __repr__(self) -> str:
        return (f"Router(name={self.name!r}, pair={self.pair!r}, strategies={len(self.keys)}, "
                f"embedding={bool(self.n_emb)}, probe_k={self.probe_k})")


# --------------------------------------------------------------------------- small helpers


def _close(a: int, b: int) -> bool:
    return abs(int(a) - int(b)) <= 1e-6 * max(abs(int(a)), abs(int(b)), 1)


def _check_questions(questions: Sequence[str]) -> list[str]:
    if isinstance(questions, str):
        raise RouterError("questions must be a list of strings, got one string (use route() for one)")
    out = list(questions)
    for i, q in enumerate(out):
        if not isinstance(q, str) or not q.strip():
            raise RouterError(f"question {i} must be a non-empty string, got {q!r:.80}")
    return out


def _candidate_dict(c: Any) -> dict[str, Any]:
    return {"text": c.text, "answer": c.answer, "score": c.score, "step_scores": c.step_scores,
            "finish_reason": c.finish_reason}


def _compute_dict(c: Any) -> dict[str, Any]:
    return {"prompt_tokens": int(c.policy_prompt_tokens), "generated_tokens": int(c.policy_generated_tokens),
            "prm_tokens": int(c.prm_tokens), "tokens": int(c.tokens), "policy_flops": float(c.policy_flops),
            "prm_flops": float(c.prm_flops), "flops": float(c.flops), "context_tokens": int(c.policy_context_tokens)}


def _with_probe(compute: dict, probe: _Probe | None) -> dict[str, Any]:
    """The search's compute plus the probe's (its prompt, k samples and their PRM scoring)."""
    from ttsopt.search.compute import Compute

    if probe is None:
        return {**compute, "search": dict(compute), "probe": None}
    p = probe.samples
    spent = Compute()
    # charged like any call (the prompt once); what a search re-sent stays the search's own figure
    spent.add_policy(p.prompt_tokens, sum(x.tokens for x in p.samples), p.policy_parameters, context_tokens=0)
    spent.add_prm(sum(p.prm_tokens) if p.prm_tokens is not None else 0, p.prm_parameters)
    extra = _compute_dict(spent)
    return {**{k: compute[k] + extra[k] for k in compute}, "search": dict(compute),
            "probe": {"prompt_tokens": spent.policy_prompt_tokens, "generated_tokens": spent.policy_generated_tokens,
                      "prm_tokens": spent.prm_tokens, "tokens": probe.row["probe_cost_tokens"],
                      "flops": probe.row["probe_cost_flops"]}}


__all__ = ["Budget", "CASCADE_MODES", "Candidate", "Decision", "EMBEDDING_CACHE_SIZE", "REUSING_METHODS", "Router",
           "RouterError", "Solution"]
