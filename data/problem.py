"""The one record every stage passes around: a problem with its gold answer."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

_SPACE = re.compile(r"\s+")


def normalize_question(question: str) -> str:
    """The question's text up to presentation: Unicode NFKC, runs of white space as one space,
    no space at the ends. Case and punctuation are kept: in math they can change the problem."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", question)).strip()


def question_key(question: str) -> str:
    """A stable key of the normalised question text: ``q-`` and 16 hex digits of its BLAKE2b.

    The key, not the id, says whether two problems are the same question: a generator seed
    or a second file can give the same text another id, and a split that keeps one copy on
    each side leaks the answer. Every split downstream groups by this key.
    """
    digest = hashlib.blake2b(normalize_question(question).encode("utf-8"), digest_size=8).hexdigest()
    return f"q-{digest}"


@dataclass(frozen=True)
class Problem:
    """A question with a gold answer.

    ``id`` is stable across runs and unique within a problem set (the outcome store keys
    rows on it); ``key`` identifies the question's text across ids, seeds and sources.
    ``source`` says where the problem came from (a file path, ``builtin:arith``, ``hf:NAME``)
    and ``metadata`` carries what the source knows about it: ``level``, ``subject``...
    """

    id: str
    question: str
    answer: str
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def level(self) -> Any:
        return self.metadata.get("level")

    @property
    def key(self) -> str:
        return question_key(self.question)
