"""Request bodies of the service, and how a body's budget fields become one ``Budget``.

Budget fields (top level of every POST body; with the ``openai`` client pass them in
``extra_body``) -- give at most one:

* ``budget``: N, generations per problem (the paper's axis): strategies with ``n <= budget``;
* ``budget_tokens``: expected tokens per problem (policy prompt + generated + PRM, probe included);
* ``budget_flops``: expected FLOPs per problem (probe included);
* ``target_accuracy``: in (0, 1]: the cheapest strategy predicted to reach it (the decision says
  whether any does).

``cascade: true`` (or ``"router"``, ``"fitted"``; chat completions and ``/v1/solve``) runs the
router's verify-first cascade instead of its argmax: the greedy CoT, checked by the PRM,
escalated where the check fails (``Router.solve_many(cascade=...)``); it needs a budget of N.

None of them: the server's default budget (``ServeSettings.default_budget_n``), or a 400 when the
server has none. Unknown fields are accepted and ignored, as vLLM does, so the OpenAI sampling
fields (``temperature``, ``max_tokens``, ...) are ignored: the chosen strategy fixes the sampling.

Known fields are typed strictly: ``"budget": "4"`` or ``"budget": true`` is a 400 naming the field,
not a budget of 4 or 1 (a careless client's slip should not pick a strategy); numbers may be
integers where a float is expected.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from .settings import ServeSettings

#: request field -> the ``Budget`` field it sets
BUDGET_FIELDS = {"budget": "n", "budget_tokens": "tokens", "budget_flops": "flops", "target_accuracy": "target_accuracy"}


class BudgetFields(BaseModel):
    """The budget fields every POST body may carry (see the module docstring)."""

    model_config = ConfigDict(extra="ignore")
    budget: StrictInt | None = Field(None, description="N: generations per problem (strategies with n <= budget)")
    budget_tokens: StrictFloat | None = Field(None, description="expected tokens per problem, probe included")
    budget_flops: StrictFloat | None = Field(None, description="expected FLOPs per problem, probe included")
    target_accuracy: StrictFloat | None = Field(None, description="the cheapest strategy predicted to reach it")
    cascade: StrictBool | StrictStr | None = Field(None, description="solve: absent, the pair's deployed default "
                                "(the mode `ttsopt train` chose by nested cross-fitting); false, the LightGBM "
                                "argmax; true or a mode, verify the greedy CoT with the PRM first and on doubt "
                                "escalate as the router decides (\"router\") or to the fitted search (\"fitted\")")


class ContentPart(BaseModel):
    """One OpenAI content part; only ``text`` parts can be answered (others are refused by :func:`question_of`)."""

    model_config = ConfigDict(extra="allow")
    type: StrictStr
    text: StrictStr | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: StrictStr
    #: a string, or OpenAI content parts (``[{"type": "text", "text": ...}]``); text parts only
    content: StrictStr | list[ContentPart] | None = None


class ChatRequest(BudgetFields):
    """``POST /v1/chat/completions``: the question is the last ``user`` message."""

    model: StrictStr | None = None
    messages: list[ChatMessage]
    stream: StrictBool = False
    n: StrictInt = 1
    #: put the search's trace (candidates, scores, kept paths) into the ``ttsopt`` field
    include_trace: StrictBool = False


class QuestionsRequest(BudgetFields):
    """``POST /v1/route`` and ``POST /v1/solve``: ``question`` (one) or ``questions`` (a list)."""

    model: StrictStr | None = None
    question: StrictStr | None = None
    questions: list[StrictStr] | None = None
    #: /v1/solve only: keep each solution's trace (it can be long)
    include_trace: StrictBool = True


class RequestError(ValueError):
    """A request the client must fix: answered 400 with this message."""


def budget_of(body: BudgetFields, settings: ServeSettings):
    """The one ``Budget`` a body asks for, checked against the server's bounds (RequestError otherwise)."""
    from ttsopt.selector.records import Budget

    given = {name: getattr(body, name) for name in BUDGET_FIELDS if getattr(body, name) is not None}
    if len(given) > 1:
        raise RequestError(f"give at most one of {', '.join(BUDGET_FIELDS)}; got {', '.join(given)}")
    if not given:
        if settings.default_budget_n is None:
            raise RequestError(f"this server has no default budget: give one of {', '.join(BUDGET_FIELDS)}")
        return Budget(n=settings.default_budget_n)
    (name, value), = given.items()
    kind = BUDGET_FIELDS[name]
    if kind == "target_accuracy":
        if not 0.0 < value <= 1.0:
            raise RequestError(f"target_accuracy must be in (0, 1], got {value!r}")
    else:
        if not value > 0 or value != value or value == float("inf"):
            raise RequestError(f"{name} must be a positive finite number, got {value!r}")
        refusal = settings.budget_refusal(kind, value)
        if refusal is not None:
            raise RequestError(refusal)
    try:
        return Budget(**{kind: value})
    except ValueError as e:  # the Budget's own checks
        raise RequestError(str(e)) from None


def question_of(messages: list[ChatMessage]) -> str:
    """The text of the last ``user`` message (RequestError if there is none or it is not text)."""
    return question_and_field(messages)[0]


def question_and_field(messages: list[ChatMessage]) -> tuple[str, str]:
    """(the text of the last ``user`` message, the field it came from: ``messages[2].content``);
    RequestError naming the field if there is none or it is not text."""
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if message.role != "user":
            continue
        where = f"messages[{i}].content"
        content = message.content
        if isinstance(content, str):
            return content, where
        if content is None:
            raise RequestError(f"{where}: the last user message has no content")
        texts = []
        for j, part in enumerate(content):
            if part.type != "text":
                raise RequestError(f"{where}[{j}]: only text content parts are supported, got type {part.type[:50]!r}")
            if part.text is None:
                raise RequestError(f"{where}[{j}].text: a text content part needs its text")
            texts.append(part.text)
        return "\n".join(texts), where
    raise RequestError("messages has no user message: the question is the last user message")


__all__ = ["BUDGET_FIELDS", "BudgetFields", "ChatMessage", "ChatRequest", "ContentPart", "QuestionsRequest",
           "RequestError", "budget_of", "question_and_field", "question_of"]
