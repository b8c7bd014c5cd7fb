"""How a question becomes the text a policy continues.

Small models follow an answer format only when they see it: zero-shot, SmolLM2-135M
used "The answer is N" 12-25% of the time, so the default prompt carries two worked
examples whose steps are separated by the step delimiter and contain checkable
equations. Instruct models get them as chat turns; base models as plain few-shot text.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_INSTRUCTION = (
    "Solve the math problem step by step. Write one short step per paragraph, "
    "separated by a blank line. Finish with 'The answer is N.'"
)

ARITH_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("What is 7 + 5?", "7 + 5 = 12\n\nThe answer is 12."),
    (
        "A box holds 4 rows of 6 eggs. 5 eggs break. How many eggs are left?",
        "4 * 6 = 24\n\n24 - 5 = 19\n\nThe answer is 19.",
    ),
)


@dataclass(frozen=True)
class PromptFormat:
    """A prompt recipe: instruction, worked examples, chat or plain text.

    ``end_markers`` end a completion like EOS does (they are *not* kept in the text):
    a base model given plain few-shot text goes on to write the next ``Question:``.
    """

    instruction: str = DEFAULT_INSTRUCTION
    examples: tuple[tuple[str, str], ...] = ARITH_EXAMPLES
    chat: bool = True
    end_markers: tuple[str, ...] = ()

    def render(self, question: str, tokenizer=None) -> str:
        if self.chat:
            if tokenizer is None or not getattr(tokenizer, "chat_template", None):
                raise ValueError("a chat prompt format needs a tokenizer with a chat template")
            messages = []
            for i, (q, a) in enumerate(self.examples):
                content = f"{self.instruction}\n\n{q}" if i == 0 and self.instruction else q
                messages += [{"role": "user", "content": content}, {"role": "assistant", "content": a}]
            content = question if self.examples or not self.instruction else f"{self.instruction}\n\n{question}"
            messages.append({"role": "user", "content": content})
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        parts = [self.instruction] if self.instruction else []
        parts += [f"Question: {q}\nAnswer:\n{a}" for q, a in self.examples]
        parts.append(f"Question: {question}\nAnswer:\n")
        return "\n\n\n".join(parts[:-1]) + ("\n\n\n" if len(parts) > 1 else "") + parts[-1]


def chat_format() -> PromptFormat:
    return PromptFormat(chat=True)


def plain_format() -> PromptFormat:
    """Few-shot text for base models (no chat template): stop before the next question."""
    return PromptFormat(chat=False, end_markers=("\nQuestion:", "Question:"))


def default_format(tokenizer=None) -> PromptFormat:
    """Chat turns when the tokenizer has a chat template, plain few-shot text otherwise."""
    return chat_format() if tokenizer is not None and getattr(tokenizer, "chat_template", None) else plain_format()
