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

The router is a facade over small modules, one per seam: :mod:`.binding` (which models to load, and
refusing ones it was not trained for), :mod:`.inputs` (the per-pair static block, the embedding
cache, live probes, the question block), :mod:`.choice` (expected costs and the choice under a
budget), :mod:`.solving` (running the chosen search, the compute it reports), :mod:`.online_cascade`
(the verify-first cascade) and :mod:`.plan` (the cascade's fitted plan as a typed record).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import binding, choice, inputs, online_cascade, solving
from .features import Embedder
from .inputs import REUSING_METHODS, LiveProbe, check_questions
from .deployed import MODES, Deployed, deployed_for
from .plan import CASCADE_MODES, CascadePlan, PlanError, StagePlan, canonical_mode
from .records import Budget, Candidate, Decision, RouterError, Solution

#: Raw embeddings kept in memory per router (questions repeat in production traffic).
EMBEDDING_CACHE_SIZE = 4096


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
        self._emb_cache = inputs.EmbeddingCache(embedding_cache)
        self._load_lock = threading.RLock()
        self._model_lock = threading.RLock()
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
        binding.check_engine(engine)
        return cls(artifact, Path(path), pair, engine=engine, device=device, policy=policy, prm=prm,
                   encoder=encoder, **options)

    def _search_settings(self) -> dict[str, Any]:
        return binding.search_settings(self.search, path=self.path, pair=self.pair)

    @property
    def policy(self) -> Any:
        if self._policy is None:
            with self._load_lock:
                if self._policy is None:
                    policy = binding.load_policy(self.entry, override=self.policy_spec, engine=self.engine,
                                                 device=self.device, pair=self.pair)
                    self._check_policy(policy)
                    self._policy = policy
        return self._policy

    @property
    def prm(self) -> Any:
        if self._prm is None:
            with self._load_lock:
                if self._prm is None:
                    prm = binding.load_prm(self.entry, override=self.prm_spec, engine=self.engine,
                                           device=self.device, pair=self.pair)
                    self._check_prm(prm)
                    self._prm = prm
        return self._prm

    def _check_policy(self, policy: Any) -> None:
        if self.check_models:
            binding.check_policy(policy, pair=self.pair, entry=self.entry, search=self.search)

    def _check_prm(self, prm: Any) -> None:
        if self.check_models:
            binding.check_prm(prm, pair=self.pair, entry=self.entry, search=self.search)

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

    # -- model inputs -----------------------------------------------------------------------

    def _prepare(self) -> None:
        """The parts of the model's input that do not depend on the question (:func:`inputs.prepare_catalogue`)."""
        def params(role: str) -> int | None:
            return self.entry.get(f"{role}_params") or binding.trained_model(self.search, self.entry, role)[1]

        cat = inputs.prepare_catalogue(self.entry, self.pipeline, reuse_probe=self.reuse_probe,
                                       policy_params=params("policy"), prm_params=params("prm"))
        self.catalogue = cat
        self.keys, self.strategies, self.n = cat.keys, cat.strategies, cat.n
        self.cat_tokens, self.cat_flops = cat.tokens, cat.flops
        self.columns, self.n_emb = cat.columns, cat.n_emb
        self._probe_cols, self._q_width, self._reusable = cat.probe_cols, cat.q_width, cat.reusable

    def _raw_embeddings(self, questions: Sequence[str]) -> np.ndarray:
        """Raw (n, d) float32 embeddings, encoding only the questions the in-memory LRU cache lacks."""
        return self._emb_cache.get(questions, self._encode)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        return inputs.encode_checked(self.embedder, texts, self.pipeline.pca.input_dim)

    def _probes(self, questions: Sequence[str]) -> list[LiveProbe]:
        return inputs.draw_probes(self.policy, self.prm, questions, k=int(self.probe_k),
                                  settings=self._search_settings(), seed=self.seed, lock=self._model_lock)

    def _question_block(self, questions: Sequence[str], raw: np.ndarray | None,
                        probes: Sequence[LiveProbe] | None) -> np.ndarray:
        """``(n_questions, q_width)``: txt_*, emb_*, probe_* in the pipeline's column order."""
        return inputs.question_block(self.pipeline, self.catalogue, questions, raw, probes)

    def model_inputs(self, block: np.ndarray) -> np.ndarray:
        """The fast path: ``(n_questions * n_strategies, n_columns)`` float64 rows in the pipeline's column
        order, categoricals as their category codes (what LightGBM makes of the pandas frame)."""
        return inputs.model_inputs(self.catalogue, block)

    def model_frame(self, question: str, raw: np.ndarray | None, probe_row: dict | None):
        """The pandas path for one question: the offline table's columns for it (``selector/rows.py``), through
        :meth:`FeaturePipeline.transform`, exactly as training saw them. Slower; kept as the reference."""
        return inputs.model_frame(self.pipeline, self.entry, self.keys, question, raw, probe_row)

    def predict(self, block: np.ndarray) -> np.ndarray:
        """``(n_questions, n_strategies)`` predicted accuracies from question blocks."""
        x = self.model_inputs(block)
        return self.booster.predict(x, num_threads=1).reshape(block.shape[0], len(self.keys))

    def _features(self, questions: Sequence[str]) -> tuple[np.ndarray, list[LiveProbe] | None]:
        probes = self._probes(questions) if self._probe_cols else None  # a missing model fails before the encoder loads
        raw = self._raw_embeddings(questions) if self.n_emb else None
        return self._question_block(questions, raw, probes), probes

    def question_features(self, questions: Sequence[str]) -> tuple[np.ndarray, list[Any] | None]:
        """``(block, probes)``: every question's model inputs that depend on it (the probe runs here)."""
        return self._features(check_questions(questions))

    # -- routing ------------------------------------------------------------------------

    def _route(self, questions: Sequence[str], budget: Budget,
               exclude: Sequence[str] = ()) -> tuple[list[Decision], list[LiveProbe] | None]:
        budget = choice.check_budget(budget)
        questions = check_questions(questions)
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
        budget = choice.check_budget(budget)
        if block.shape != (len(questions), self._q_width):
            raise RouterError(f"features must be ({len(questions)}, {self._q_width}), got {block.shape}")
        if self._probe_cols and (probes is None or len(probes) != len(questions)):
            raise RouterError("this router uses probes: pass the probes question_features returned")
        return self._route_block(list(questions), block, probes, budget, time.perf_counter())

    def _route_block(self, questions, block, probes, budget, start, exclude: Sequence[str] = ()) -> list[Decision]:
        pred = self.predict(block)
        tokens, flops, reuse = choice.expected_costs(self.catalogue, probes, len(questions), self.probe_k)
        blocked = np.isin(np.array(self.keys), list(exclude)) if exclude else None
        idx, fits, reached = choice.choose(self.catalogue, pred, tokens, flops, budget, blocked)
        decisions = [self._decision(q, block[i], pred[i], tokens[i], flops[i], reuse[i], fits[i], int(idx[i]),
                                    None if reached is None else bool(reached[i]), budget,
                                    probes[i] if probes else None, 0.0)
                     for i, q in enumerate(questions)]
        share = (time.perf_counter() - start) / len(questions)
        for d in decisions:
            d.seconds = share
        return decisions

    def _decision(self, question, block_row, pred, tokens, flops, reuse, fits, idx, reached, budget, probe,
                  seconds) -> Decision:
        return choice.make_decision(self.catalogue, pair=self.pair, question=question, block_row=block_row,
                                    pred=pred, tokens=tokens, flops=flops, reuse=reuse, fits=fits, idx=idx,
                                    reached=reached, budget=budget, probe=probe, probe_k=self.probe_k,
                                    seconds=seconds)

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
        from . import decide

        total = choice.check_budget(total)
        if total.kind == "target_accuracy":
            raise RouterError("allocate takes a total budget (n, tokens or flops), not a target accuracy")
        questions = check_questions(questions)
        if not questions:
            return []
        start = time.perf_counter()
        block, probes = self._features(questions)
        pred = self.predict(block)
        tokens, flops, reuse = choice.expected_costs(self.catalogue, probes, len(questions), self.probe_k)
        cost = {"n": np.broadcast_to(self.n.astype(float), pred.shape), "tokens": tokens, "flops": flops}[total.kind]
        try:
            idx = decide.allocate(pred, cost, float(total.value))
        except ValueError as e:
            raise RouterError(f"cannot allocate {total.kind} {total.value:g} over {len(questions)} questions: "
                              f"{e}") from None
        share = (time.perf_counter() - start) / len(questions)
        rows = np.arange(len(questions))
        fits = cost <= cost[rows, idx][:, None]
        return [self._decision(q, block[i], pred[i], tokens[i], flops[i], reuse[i], fits[i], int(idx[i]), None,
                               total, probes[i] if probes else None, share) for i, q in enumerate(questions)]

    # -- solving ------------------------------------------------------------------------

    def solve(self, question: str, budget: Budget, *, cascade: bool | str | None = None) -> Solution:
        """Route, then run the chosen search with the pair's policy and PRM: the answer, the decision, the
        trace and the compute actually spent (the probe's included). ``cascade``: verify first (see
        :meth:`solve_many`)."""
        return self.solve_many([question], budget, cascade=cascade)[0]

    def solve_many(self, questions: Sequence[str], budget: Budget | Sequence[Budget], *,
                   cascade: bool | str | None = None) -> list[Solution]:
        """Route and solve many questions; questions whose chosen strategies coincide run as one batched
        search call. ``budget`` is one for all or one per question.

        ``cascade`` runs the verify-first cascade fitted at training time (``manifest["cascade"]``,
        :mod:`ttsopt.train.fit.cascade`; :mod:`.online_cascade`) instead of the model's argmax: the greedy
        CoT, scored by the PRM, kept when its lowest step score reaches the fitted τ, else escalated.
        ``"level"`` (``True`` where the artifact has level plans) takes τ and the escalation fitted for the
        level its level model predicts from the question's text (the measured best on the accuracy-against-
        compute curve: benchmarks/results/selector/arith-router-eval.md); ``"binned"`` (``True`` next)
        those fitted for the question's bin of the router's predicted CoT accuracy; ``"fitted"``
        (``True`` otherwise; ``"plain"`` is another name for it) the ones fitted for the budget;
        ``"router"`` routes a doubted question within the N - 1 generations left and runs the choice only
        if its predicted accuracy beats keeping the CoT (the CoT's training accuracy where its check
        failed). It is fitted per budget N, so it takes a budget of ``n``.
        """
        questions = check_questions(questions)
        if not questions:
            return []
        budgets = [budget] * len(questions) if isinstance(budget, Budget) else list(budget)
        if len(budgets) != len(questions):
            raise RouterError(f"{len(budgets)} budgets for {len(questions)} questions")
        start = time.perf_counter()
        if cascade is None:
            return self._solve_deployed(questions, budgets, start)
        if cascade:
            try:
                mode = canonical_mode(cascade if cascade is not True else self.default_cascade_mode)
            except PlanError:
                raise RouterError(f"cascade must be True or one of {', '.join(CASCADE_MODES)}, "
                                  f"got {cascade!r}") from None
            return online_cascade.run_cascade(self, questions, [choice.check_budget(b) for b in budgets], start,
                                              mode)
        decisions: list[Decision | None] = [None] * len(questions)
        probes: list[LiveProbe | None] = [None] * len(questions)
        groups: dict[Budget, list[int]] = {}
        for i, b in enumerate(budgets):
            groups.setdefault(choice.check_budget(b), []).append(i)
        for b, members in groups.items():
            ds, ps = self._route([questions[i] for i in members], b)
            for j, i in enumerate(members):
                decisions[i] = ds[j]
                probes[i] = ps[j] if ps else None
        return self._solve_decided(questions, decisions, probes, start)

    def deployed(self, budget: Budget) -> Deployed:
        """The mode this pair runs under ``budget`` when the caller names none (:mod:`.deployed`)."""
        d = deployed_for(self.artifact.manifest, self.pair, choice.check_budget(budget))
        if MODES[d.mode] is not None and self.plan is None:  # a cascade mode without its plan: the argmax
            return Deployed("router")
        if d.mode == "per_level" and (not d.levels or self.artifact.levels is None):
            return Deployed("best_fixed", d.n, d.strategy, None, d.evidence) if d.strategy else Deployed("router")
        if d.mode in ("best_fixed", "per_level") and not d.strategy:
            return Deployed("router")
        return d

    def _solve_deployed(self, questions: list[str], budgets: list[Budget], start: float) -> list[Solution]:
        """Each question under its budget's deployed mode; questions of one mode run together."""
        chosen = [self.deployed(b) for b in budgets]
        groups: dict[str, list[int]] = {}
        for i, d in enumerate(chosen):
            groups.setdefault(d.mode, []).append(i)
        out: list[Solution | None] = [None] * len(questions)
        for mode, members in groups.items():
            qs, bs = [questions[i] for i in members], [budgets[i] for i in members]
            if mode == "router":
                sols = self.solve_many(qs, bs, cascade=False)
            elif MODES[mode] is not None:
                sols = self.solve_many(qs, bs, cascade=MODES[mode])
            else:
                keys = [chosen[i].strategy for i in members]
                info: list[dict] = [{} for _ in members]
                if mode == "per_level":
                    level, prob = online_cascade.predict_levels(self, qs)
                    for j, i in enumerate(members):
                        own = (chosen[i].levels or {}).get(str(level[j]))
                        keys[j] = own or keys[j]
                        info[j] = {"level": str(level[j]), "level_probability": float(prob[j]),
                                   "level_plan": own is not None}
                plans = [online_cascade.QuestionPlan(chosen[i].n, StagePlan(tau=None, escalate=k), extra)
                         for i, k, extra in zip(members, keys, info)]
                sols = online_cascade.run_cascade(self, qs, [choice.check_budget(b) for b in bs], start, mode,
                                                  plans=plans)
            for i, sol in zip(members, sols):
                sol.trace["deployed"] = {"mode": mode, "chosen_at_n": chosen[i].n}
                out[i] = sol
        return out  # type: ignore[return-value]

    def _solve_decided(self, questions, decisions, probes, start) -> list[Solution]:
        """Run each decision's strategy, one batched call per distinct strategy (reusing the probe where the
        strategy can); nothing fitting: :func:`solving.fallback`."""
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
                results = [solving.fallback(p, self.probe_k) for p in ps]
            else:
                strategy = self.strategies[self.keys.index(key)]
                if ps[0] is not None and self._reusable[self.keys.index(key)]:
                    results = self._run_reusing(qs, ps, strategy, s)
                else:
                    results = self._run_search(qs, strategy, s)
            for i, p, r in zip(members, ps, results):
                outs[i] = (r.answer, r.trace, solving.solution_compute(r.compute, p))
            spent = (time.perf_counter() - t0) / len(members)
            for i in members:
                timing[i] = spent
        return [Solution(answer=o[0], decision=d, trace=o[1], compute=o[2], seconds=d.seconds + timing[i])
                for i, (o, d) in enumerate(zip(outs, decisions))]

    def _run_search(self, questions: Sequence[str], strategy: Any, s: dict) -> list[solving.Run]:
        return solving.run_fresh(questions, strategy, s, policy=self.policy,
                                 prm=self.prm if strategy.uses_prm else None, seed=self.seed, lock=self._model_lock)

    def _run_reusing(self, questions: Sequence[str], probes: Sequence[LiveProbe], strategy: Any,
                     s: dict) -> list[solving.Run]:
        """Majority / Best-of-N with the probe's first ``min(N, k)`` samples as part of the N (see the module)."""
        return solving.run_reusing(questions, probes, strategy, s, policy=self.policy,
                                   prm=self.prm if strategy.uses_prm else None, seed=self.seed,
                                   probe_k=int(self.probe_k), lock=self._model_lock)

    # -- the verify-first cascade ---------------------------------------------------------

    @property
    def cascade(self) -> dict[str, Any] | None:
        """The pair's fitted cascade as the manifest holds it (``manifest["cascade"][pair]``), or None;
        :attr:`plan` is the typed record the router runs on."""
        return (self.artifact.manifest.get("cascade") or {}).get(self.pair)

    @property
    def plan(self) -> CascadePlan | None:
        """The pair's cascade plan (:class:`~ttsopt.selector.plan.CascadePlan`), read from the manifest on
        each use (so that a caller who edits :attr:`cascade` runs the edit), or None."""
        entry = self.cascade
        if not entry:
            return None
        try:
            return CascadePlan.from_dict(entry)
        except PlanError as e:
            raise RouterError(f"{self.path}: pair {self.pair}'s cascade plan: {e}") from None

    def cascade_plan(self, budget: Budget) -> dict[str, Any]:
        """The fitted choice for ``budget`` (that of the largest fitted N <= budget.n), with that N as ``n``."""
        n, stage = online_cascade.fitted_stage(self.plan, budget, path=self.path, pair=self.pair)
        return {"n": n, **stage.to_dict()}

    @property
    def default_cascade_mode(self) -> str:
        """What ``cascade=True`` runs with this artifact (see :data:`CASCADE_MODES`): the mode training
        chose (``manifest["cascade"][pair]["default_mode"]``: the level plan where every level had enough
        problems), as far as the artifact has what it needs (:meth:`CascadePlan.online_default_mode`)."""
        plan = self.plan
        if plan is None:
            return "fitted"
        return plan.online_default_mode(level_model=self.artifact.levels is not None)

    def __repr__(self) -> str:
        return (f"Router(name={self.name!r}, pair={self.pair!r}, strategies={len(self.keys)}, "
                f"embedding={bool(self.n_emb)}, probe_k={self.probe_k})")


__all__ = ["Budget", "CASCADE_MODES", "Candidate", "Decision", "EMBEDDING_CACHE_SIZE", "REUSING_METHODS", "Router",
           "RouterError", "Solution"]
