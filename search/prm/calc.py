"""A calculator-checked PRM: scores a step by recomputing the arithmetic it states.

Why it exists: at the embedded default's size an LLM judge is near chance, so the
pipeline needs one verifier with real signal and zero parameters. This one finds every
stated equation in a step (``a op b = c``, chains ``a = b = c``), recomputes both sides
exactly with :class:`fractions.Fraction` and says whether they agree. It scores each step
on its own, so a wrong setup with right arithmetic passes — its known blind spot.

How text becomes equations (conservative on purpose: a false alarm on a right step is
worse than a missed check, so anything doubtful is *uncheckable*, never *wrong*):

* Notation: ``+ - * × x · / ÷ ^ **``, parentheses (also ``[]`` and LaTeX ``{}``), unary
  minus, a product written tight against a parenthesis (``2(3+4)``), numbers with
  thousands commas (``1,234``, LaTeX ``729,\\!000``, ``10{,}000``) and decimals, percent
  (``20%`` is ``1/5``; ``20% of 50``), fractions (``3/4``, ``3/4 of 20``, ``\\frac{3}{4}``,
  mixed ``2\\frac{1}{2}``), currency (``$5``), LaTeX ``\\times \\cdot \\div \\frac \\left
  \\right \\text{..} \\boxed{..}``, GSM8K's ``<<4*5=20>>`` and the words ``times, plus, minus,
  divided by, multiplied by`` between numbers (``x`` and ``times`` also after units:
  ``20 sacks x 65 pounds``). Markdown bold (``**8**``) and list bullets (``- 2^9 = 512`` is
  not ``-2^9``) are ignored.
* Units: words after a number (or after ``%`` / ``)``) are units and dropped, as are
  ``/word`` and ``^2`` after them (``2 pounds/book``, ``$5/hour``, ``15 cm^2``), and
  parentheses holding only words (``6 (by her brother) + 1``). So ``5 apples + 3 apples =
  8 apples`` checks out. A side is checkable only if what remains parses *fully* as
  arithmetic. Variables (single letters other than *a*/*I*, and *a* next to an operator;
  names with digits, underscores or primes; letters written against a number like ``4x``
  or ``3ab`` except a few units like ``5kg``), ordinals (``6th``), times and ratios
  (``3:45``), unknown LaTeX commands (``\\sqrt``, ``\\pi``), stray words, and linking words
  among the units when more arithmetic follows (``148 and a - 5``) make a side uncheckable.
* Where a side starts: text is cut into segments at hard boundaries (``. , : ; ? !``,
  newlines, math delimiters, ``\\approx``, ``<`` ...); inline math ``\\( \\)`` holding no
  ``=`` is read as plain text instead (``\\(10\\) (last night) + \\(45\\) = \\(55\\)``), while
  inline math holding an equation is bounded by its delimiters. Within a segment the ``=``
  signs split it into parts. A left side is the longest parseable suffix of the part
  before an ``=`` that starts at the part's start or right after words; a right side is
  the longest parseable prefix after it, which may stop before words or a spaced
  parenthetical (``= $0.20 (20 cents)``). A cut next to an operator, or inside words that
  link two numbers (``2 and 3``, ``5 more than 3``), is refused, except joining words
  (*and, then, so*) between two equations (``2 * 3 = 6 and 6 + 1 = 7``).
* Labels and changes of units are not computations: a left side that is a lone number
  preceded by words (``Cost of 3 apples = 3*2``), or a lone number or fraction carrying
  units (``60 minutes = 1 hour``, ``5 pairs = 5*2``), is not taken, and two lone numbers
  with units or currency that differ are left unchecked (``$0.054 = 5.4 cents``).
* Chains: every adjacent pair of sides must be equal (so ``5 + 3 = 8 + 2 = 10`` is wrong);
  ``\\approx`` breaks a chain (approximations are not checked).
* Rounding: a side that is a lone number with *d* decimals may be the exact value rounded
  *or truncated* to *d* decimals (``10/3 = 3.33``, ``1547/3 = 515.66``); integers get no
  such slack (``7/2 = 3`` is wrong) except in a step that talks about remainders, quotients
  or rounding, where an integer equal to the floor or ceiling is left uncheckable. A lone
  percentage may stand for its fraction or its plain number (``10/50 * 100 = 20%``). A
  computed side using a decimal with >= 3 decimals (a rounded irrational, ``2.8284^2 = 8``)
  is compared with relative tolerance ``5 * 10**-d``. Repeating decimals
  (``0.\\overline{6}``) are uncheckable.

Bounds, so hostile text can neither hang nor exhaust memory: a step is read up to
``max_chars`` characters (then cut back to the last sentence or line end, so no number is
split); a number with more than ``max_digits`` digits, a power whose result would exceed
``max_digits`` digits (estimated *before* computing), any intermediate value beyond that
size, a side with more than ``max_ops`` operators, or parentheses nested deeper than
``_MAX_DEPTH`` make that equation uncheckable, and a step's ``=`` signs past the first
``_MAX_EQUATIONS`` are not checked. ``eval`` is never used.

Step score: any wrong equation -> ``wrong_score``; else any right one -> ``right_score``;
else ``neutral_score``. No softening by count: three levels keep PRM-min/last/avg
aggregation easy to read.

Tokens: the PRM reads the steps (not the question), up to ``max_chars`` each; ``tokens``
counts them with the regex ``\\w+|[^\\w\\s]`` (words/numbers and single punctuation marks),
a rough stand-in for a BPE count. Its FLOPs are zero because ``num_parameters`` is 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Sequence

from ..types import StepScores

# ---------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------

NUM, OP, LP, RP, PCT, CUR, FRAC, EQ, WORD, VAR, OPAQUE, BOUND = (
    "NUM", "OP", "LP", "RP", "PCT", "CUR", "FRAC", "EQ", "WORD", "VAR", "OPAQUE", "BOUND",
)

_MAX_DEPTH = 50  # parenthesis nesting beyond this is uncheckable (keeps recursion shallow)
_MAX_CANDIDATES = 16  # cut points tried per side
_MAX_EQUATIONS = 256  # '=' signs checked per step; later ones count as unchecked
_COUNT_TOKENS = re.compile(r"\w+|[^\w\s]")

#: words that link two numbers: cutting an expression there would misread the step
_CONNECTORS = frozenset(
    "and or plus minus times by from of to than over out per into with less more added subtracted "
    "multiplied divided sum difference product quotient for in at on each every".split()
)
#: between two equations ("= 6 and 6 + 1 ="), these words join sentences, not numbers
_JOINERS = frozenset("and then so thus hence therefore".split())
_LATEX_MUL = frozenset({"times", "cdot", "ast", "bullet"})
_LATEX_FRAC = frozenset({"frac", "dfrac", "tfrac", "cfrac"})
_LATEX_SKIP = frozenset(
    "left right big Big bigg Bigg bigl bigr Bigl Bigr displaystyle textstyle quad qquad boxed text "
    "mathrm textbf mathbf textit mbox operatorname textnormal limits nolimits hspace phantom".split()
)
_LATEX_BOUND = frozenset(
    "approx le leq ge geq ne neq lt gt sim simeq equiv Rightarrow rightarrow implies to therefore "
    "because ldots cdots dots vdots newline hline begin end Longrightarrow iff mapsto".split()
)
_PLAIN_WORDS = frozenset({"a", "A", "I"})  # single letters that are words, not variables
_ORDINALS = frozenset({"st", "nd", "rd", "th"})  # "1st - 5 = 6th" is not arithmetic
#: letters written against a number that are units, not a product with a variable
_TIGHT_UNITS = frozenset(
    "kg mg km cm mm mi ft lb lbs oz hr hrs min mins sec secs ml am pm mph kph".split()
)
#: a step that talks about these may state integer division or rounding as "="
_INTEGER_CONTEXT = re.compile(
    r"remainder|quotient|\bmod\b|modulo|\bround|whole number|\bceil|\bfloor|\\[lr](?:floor|ceil)|\\pmod",
    re.IGNORECASE,
)

_TEXT_CMD = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}"
)
_LATEX_THOUSANDS = re.compile(r"(?<=\d)(?:\{,\}|,\\!|\\[,!])(?=\d{3}(?!\d))")  # 729,\!000  10{,}000
_ENV_CMD = re.compile(r"\\(?:begin|end)\s*\{[^{}]*\}")
_INLINE_MATH = re.compile(r"\\\((.{0,400}?)\\\)", re.DOTALL)  # bounded: no quadratic scan
_BULLET = re.compile(r"^[ \t]*[-*+•][ \t]+", re.MULTILINE)  # "- 2^9 = 512" is a list item, not -2^9
_TOKEN = re.compile(
    r"""
     (?P<ws>[^\S\n]+)
    |(?P<num>\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)
    |(?P<latex>\\(?:[A-Za-z]+|.|$))
    |(?P<pow>\*\*)
    |(?P<op>[-+*/^×·⋅∗÷−–])
    |(?P<eq>==?|&=)
    |(?P<lp>[(\[{])
    |(?P<rp>[)\]}])
    |(?P<pct>%)
    |(?P<cur>[$€£¥])
    |(?P<xop>(?<=\d)[xX](?=\d))
    |(?P<ratio>(?<=\d):(?=\d))
    |(?P<word>[A-Za-z][A-Za-z0-9_']*(?:-[A-Za-z][A-Za-z0-9_']*)*)
    |(?P<bound><<|>>|\.\.\.|[.,:;?!<>≈≤≥≠→⇒—…"`\n])
    |(?P<skip>[&'~])
    |(?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_OP_NORMAL = {"×": "*", "·": "*", "⋅": "*", "∗": "*", "÷": "/", "−": "-", "–": "-"}


@dataclass(slots=True)
class _Tok:
    kind: str
    text: str
    pos: int  # index in the token list, for adjacency (implicit products, mixed numbers)
    attached: bool = False  # no whitespace before it
    incomplete: bool = False  # "0.\overline{6}": the number goes on in notation we do not read


def _tokenize(text: str) -> list[_Tok]:
    """Text -> tokens of the kinds above, with LaTeX and markdown resolved."""
    text = _LATEX_THOUSANDS.sub(",", text)
    text = _ENV_CMD.sub("\n", text)
    text = _BULLET.sub("", text)
    text = _INLINE_MATH.sub(_inline_math, text)
    text = _TEXT_CMD.sub(r" \1 ", text)
    toks: list[_Tok] = []
    space = True

    def emit(kind: str, s: str) -> None:
        t = _Tok(kind, s, len(toks), not space)
        if (
            t.attached and kind in (LP, OPAQUE) and len(toks) >= 2
            and toks[-1].kind == BOUND and toks[-1].text == "." and toks[-1].attached and toks[-2].kind == NUM
        ):
            toks[-2].incomplete = True  # 0.\overline{3}, 0.(3)
        toks.append(t)

    for m in _TOKEN.finditer(text):
        group, s = m.lastgroup, m.group()
        if group == "ws":
            space = True
            continue
        if group == "num":
            emit(NUM, s)
        elif group == "latex":
            _emit_latex(s[1:], text, m.end(), emit)
        elif group == "pow":
            # exponent only between operands (2**3, 2 ** 3); otherwise markdown bold, dropped
            prev_ok = bool(toks) and toks[-1].kind in (NUM, RP)
            before = text[m.start() - 1] if m.start() else " "
            after = text[m.end()] if m.end() < len(text) else " "
            nxt = text[m.end():m.end() + 2].lstrip()[:1]
            tight = not before.isspace() and (after.isdigit() or after in "(-")
            spaced = before.isspace() and after.isspace() and (nxt.isdigit() or nxt in "(-")
            if prev_ok and (tight or spaced):
                emit(OP, "^")
        elif group == "op":
            emit(OP, _OP_NORMAL.get(s, s))
        elif group == "xop":  # 6x7
            emit(OP, "*")
        elif group == "ratio":  # 3:45, 3:4 — a time or a ratio, not a sentence break
            emit(OPAQUE, s)
        elif group == "eq":
            emit(EQ, "=")
        elif group == "lp":
            emit(LP, s)
        elif group == "rp":
            emit(RP, s)
        elif group == "pct":
            emit(PCT, s)
        elif group == "cur":
            emit(CUR if _digit_follows(text, m.end()) else (BOUND if s == "$" else OPAQUE), s)
        elif group == "bound":
            emit(BOUND, s)
        elif group == "word":
            emit(WORD, s)
        elif group != "skip":
            emit(OPAQUE, s)
        space = False
    _resolve_words(toks)
    return toks


def _inline_math(m: re.Match) -> str:
    """Inline math holding an equation is a unit of its own (its delimiters bound it); inline
    math without one is read as plain text: "\\(10\\) (last night) + \\(45\\) = \\(55\\)"."""
    inner = m.group(1)
    return m.group(0) if "=" in inner else f" {inner} "


def _emit_latex(name: str, text: str, end: int, emit) -> None:
    if name in _LATEX_MUL:
        emit(OP, "*")
    elif name == "div":
        emit(OP, "/")
    elif name in _LATEX_FRAC:
        emit(FRAC, "\\" + name)
    elif name == "%":
        emit(PCT, "%")
    elif name == "$":
        emit(CUR if _digit_follows(text, end) else BOUND, "$")
    elif name in _LATEX_SKIP or name in {",", ";", ":", "!", " ", "&", ""}:
        pass
    elif name in _LATEX_BOUND or name in {"(", ")", "[", "]", "\\"}:
        emit(BOUND, "\\" + name)
    else:  # \sqrt, \pi, \pm, \overline, \{ ...: meaning we do not model
        emit(OPAQUE, "\\" + name)


def _digit_follows(text: str, i: int) -> bool:
    nxt = text[i:i + 2].lstrip()
    return bool(nxt) and (nxt[0].isdigit() or (nxt[0] == "." and nxt[1:2].isdigit()))


_OPERAND_END = (NUM, RP, PCT)
_OPERAND_START = (NUM, LP, CUR, FRAC)
_WORD_OPS = {"x": "*", "times": "*", "plus": "+", "minus": "-"}


def _resolve_words(toks: list[_Tok]) -> None:
    """Turn operator words into operators and mark variables (in place)."""
    n = len(toks)
    drop: set[int] = set()
    for i, t in enumerate(toks):
        if t.kind != WORD:
            continue
        w = t.text
        low = w.lower()
        prev = toks[i - 1] if i else None
        nxt = toks[i + 1] if i + 1 < n else None
        between = prev is not None and prev.kind in _OPERAND_END and nxt is not None
        if low in ("x", "times") and nxt is not None and nxt.kind in _OPERAND_START and _after_quantity(toks, i):
            t.kind, t.text = OP, "*"  # "20 sacks x 65 pounds"
        elif between and nxt.kind in _OPERAND_START and low in _WORD_OPS:
            t.kind, t.text = OP, _WORD_OPS[low]
        elif between and low in ("divided", "multiplied") and nxt.kind == WORD and nxt.text.lower() == "by":
            after = toks[i + 2] if i + 2 < n else None
            if after is not None and after.kind in _OPERAND_START:
                t.kind, t.text = OP, "/" if low == "divided" else "*"
                drop.add(i + 1)
        elif low == "of" and between and nxt.kind in _OPERAND_START and _is_fraction_end(toks, i - 1):
            t.kind, t.text = OP, "*"
        elif (
            (len(w) == 1 and (w not in _PLAIN_WORDS or (nxt is not None and nxt.kind in (OP, EQ))
                              or (prev is not None and prev.kind == OP)))
            or any(c.isdigit() or c == "_" for c in w)
            or re.fullmatch(r"[A-Za-z]'+", w)  # f', f''
            or (t.attached and prev is not None and prev.kind == NUM and low not in _TIGHT_UNITS)
        ):
            t.kind = VAR
    if drop:
        toks[:] = [t for i, t in enumerate(toks) if i not in drop]
        for i, t in enumerate(toks):
            t.pos = i


def _after_quantity(toks: list[_Tok], i: int) -> bool:
    """Token ``i`` follows a number, maybe with unit words between: "3 x", "20 sacks x"."""
    k = i - 1
    while k >= 0 and toks[k].kind == WORD and i - k <= 4:
        k -= 1
    return k >= 0 and toks[k].kind in _OPERAND_END


def _is_fraction_end(toks: list[_Tok], i: int) -> bool:
    """``20% of``, ``\\frac{1}{3} of``, ``(1/3) of``, ``1/3 of`` mean multiplication."""
    t = toks[i]
    if t.kind in (PCT, RP):
        return True
    return t.kind == NUM and i >= 2 and toks[i - 1].kind == OP and toks[i - 1].text == "/" and toks[i - 2].kind == NUM


# ---------------------------------------------------------------------------------------
# Exact evaluation
# ---------------------------------------------------------------------------------------


class _Uncheckable(Exception):
    """Too big, division by zero, irrational power: the equation is neither right nor wrong."""


class _ParseError(Exception):
    """Not an arithmetic expression."""


class _TooLong(_ParseError):
    """More operators or tokens than allowed: a shorter cut may still be read."""


@dataclass(frozen=True)
class _Side:
    value: Fraction
    #: (number, decimals) this side states when it is a lone literal; a percentage states
    #: both its fraction (decimals + 2) and its plain number
    stated: tuple[tuple[Fraction, int], ...]
    simple: bool  # a lone number or fraction of two numbers, no other operator
    has_units: bool  # words were dropped as units
    marked: bool  # units or a currency sign
    rel_tol: Fraction  # > 0 when it computes with a rounded decimal (>= 3 decimals)


class _Evaluator:
    """Recursive descent over numbers and operators only, with a size check on every value."""

    def __init__(self, toks: list[_Tok], max_digits: int) -> None:
        self.toks = toks
        self.i = 0
        self.max_digits = max_digits
        self.max_bits = int(max_digits * math.log2(10)) + 1
        self.depth = 0

    def peek(self, ahead: int = 0) -> _Tok | None:
        j = self.i + ahead
        return self.toks[j] if j < len(self.toks) else None

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def is_op(self, chars: str) -> bool:
        t = self.peek()
        return t is not None and t.kind == OP and t.text in chars

    def check(self, v: Fraction) -> Fraction:
        if v.numerator.bit_length() > self.max_bits or v.denominator.bit_length() > self.max_bits:
            raise _Uncheckable("value too large")
        return v

    def run(self) -> Fraction:
        v = self.expr()
        if self.peek() is not None:
            raise _ParseError("trailing tokens")
        return v

    def expr(self) -> Fraction:
        v = self.term()
        while self.is_op("+-"):
            op = self.take().text
            rhs = self.term()
            v = self.check(v + rhs if op == "+" else v - rhs)
        return v

    def term(self) -> Fraction:
        v = self.unary()
        while True:
            t = self.peek()
            if t is not None and t.kind == OP and t.text in "*/":
                self.take()
                rhs = self.unary()
                if t.text == "/" and rhs == 0:
                    raise _Uncheckable("division by zero")
                v = self.check(v * rhs if t.text == "*" else v / rhs)
            elif t is not None and t.kind == LP and self._tight_product(t):
                v = self.check(v * self.unary())
            else:
                return v

    def _tight_product(self, t: _Tok) -> bool:
        # "2(3+4)" multiplies; "$0.20 (20 cents)" restates: only a parenthesis written tight counts
        prev = self.toks[self.i - 1]
        return prev.kind in (NUM, RP) and t.pos == prev.pos + 1 and t.attached

    def unary(self) -> Fraction:
        if self.is_op("+-"):
            sign = self.take().text
            v = self.unary()
            return -v if sign == "-" else v
        return self.power()

    def power(self) -> Fraction:
        base = self.postfix()
        if self.is_op("^"):
            self.take()
            exp = self.unary()  # right-associative: 2^3^2 = 2^9
            return self.pow(base, exp)
        return base

    def pow(self, base: Fraction, exp: Fraction) -> Fraction:
        if exp.denominator != 1:
            raise _Uncheckable("non-integer exponent")
        e = exp.numerator
        if base == 0:
            if e < 0:
                raise _Uncheckable("zero to a negative power")
            return Fraction(1) if e == 0 else Fraction(0)
        if abs(base) == 1:
            return Fraction(1) if base == 1 or e % 2 == 0 else Fraction(-1)
        # the result's size, estimated before computing: |e| * log2(max(num, den)) bits
        if abs(e) > self.max_bits or abs(e) * math.log2(max(abs(base.numerator), base.denominator)) > self.max_bits:
            raise _Uncheckable("power too large")
        return self.check(base**e)

    def postfix(self) -> Fraction:
        v = self.primary()
        while (t := self.peek()) is not None and t.kind == PCT:
            self.take()
            v = v / 100
        return v

    def primary(self) -> Fraction:
        t = self.peek()
        if t is None:
            raise _ParseError("expression ends early")
        if t.kind == NUM:
            self.take()
            v = _number(t, self.max_digits)
            if _mixed_number_at(self.toks, self.i - 1):  # 2\frac{1}{2} = 2 + 1/2
                self.take()
                frac = self.group() / self.group()
                return self.check(v + frac)
            return v
        if t.kind == LP:
            return self.group()
        if t.kind == FRAC:
            self.take()
            num = self.group()
            den = self.group()
            if den == 0:
                raise _Uncheckable("division by zero")
            return self.check(num / den)
        raise _ParseError(f"unexpected {t.text!r}")

    def group(self) -> Fraction:
        t = self.peek()
        if t is None or t.kind != LP:
            raise _ParseError("expected a parenthesis")
        self.take()
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _Uncheckable("nested too deep")
        v = self.expr()
        t = self.peek()
        if t is None or t.kind != RP:
            raise _ParseError("unbalanced parenthesis")
        self.take()
        self.depth -= 1
        return v


def _mixed_number_at(toks: list[_Tok], i: int) -> bool:
    """An integer written against ``\\frac{n}{d}`` of two integers."""
    kinds = [t.kind for t in toks[i:i + 8]]
    return (
        kinds == [NUM, FRAC, LP, NUM, RP, LP, NUM, RP]
        and toks[i + 1].pos == toks[i].pos + 1
        and all("." not in toks[j].text for j in (i, i + 3, i + 6))
    )


def _number(tok: _Tok, max_digits: int) -> Fraction:
    whole, _, decimals = tok.text.replace(",", "").partition(".")
    if len(whole) + len(decimals) > max_digits:
        raise _Uncheckable("number too long")
    if tok.incomplete:
        raise _Uncheckable("repeating decimal")
    return Fraction(int(whole or "0") * 10 ** len(decimals) + int(decimals or "0"), 10 ** len(decimals))


def _strip_units(toks: list[_Tok]) -> tuple[list[_Tok], bool]:
    """Drop currency signs, unit words after numbers and parentheses of words; refuse other words.

    Returns the arithmetic left and whether any unit words were dropped."""
    out: list[_Tok] = []
    in_unit = had_units = False
    i, n = 0, len(toks)
    last_arithmetic = max((k for k, t in enumerate(toks) if t.kind != WORD), default=-1)
    while i < n:
        t = toks[i]
        if t.kind == LP:  # "6 (by her brother) + 1 (by Doxa)": a comment in words
            k = i + 1
            while k < n and toks[k].kind == WORD:
                k += 1
            if k > i + 1 and k < n and toks[k].kind == RP:
                i = k + 1
                continue
        if t.kind == WORD:
            if in_unit or (out and out[-1].kind in _OPERAND_END):
                low = t.text.lower()
                if low != "per" and low in _CONNECTORS and i < last_arithmetic:
                    # "148 and a - 5", "3 and add up to -4": a link to other numbers, not a unit
                    raise _ParseError(f"{t.text!r} links two quantities")
                in_unit = had_units = True
                i += 1
                continue
            raise _ParseError(f"word {t.text!r} is not a unit")
        if t.kind in (VAR, OPAQUE):
            raise _ParseError(f"{t.text!r} is not arithmetic")
        if in_unit and t.kind == OP and t.text == "^" and i + 1 < n and toks[i + 1].kind == NUM:
            i += 2  # cm^2: the unit's exponent
            continue
        if t.kind == OP and t.text == "/" and i + 1 < n and toks[i + 1].kind == WORD:
            if in_unit or (out and out[-1].kind in _OPERAND_END):  # pounds/book, $5/hour
                in_unit = True
                i += 2
                continue
        in_unit = False
        if t.kind != CUR:
            out.append(t)
        i += 1
    return out, had_units


def _evaluate(toks: list[_Tok], max_digits: int, max_ops: int) -> _Side:
    """Value of one side, or raise _ParseError / _Uncheckable."""
    if len(toks) > 4 * max_ops + 32 or sum(t.kind == OP for t in toks) > max_ops:
        raise _TooLong("too many operators")
    core, has_units = _strip_units(toks)
    core = _unwrap(core)
    if not core:
        raise _ParseError("empty side")
    value = _Evaluator(core, max_digits).run()
    body = core[1:] if core[0].kind == OP and core[0].text in "+-" else core
    sign = -1 if body is not core and core[0].text == "-" else 1
    kinds = [t.kind for t in body]
    stated: list[tuple[Fraction, int]] = []
    if kinds in ([NUM], [NUM, PCT]):
        shown = sign * _number(body[0], max_digits)
        decimals = _decimals(body[0])
        stated = [(shown / 100, decimals + 2), (shown, decimals)] if kinds[-1] == PCT else [(shown, decimals)]
    simple = bool(stated) or _is_simple_fraction(body)
    rel_tol = Fraction(0)
    if not stated:
        rounded = [d for d in (_decimals(t) for t in core if t.kind == NUM) if d >= 3]
        if rounded:
            rel_tol = Fraction(5, 10 ** min(rounded))
    marked = has_units or any(t.kind == CUR for t in toks)
    return _Side(value, tuple(stated), simple, has_units, marked, rel_tol)


def _unwrap(core: list[_Tok]) -> list[_Tok]:
    """``(8)``, ``\\boxed{1250}``: a side wrapped whole in parentheses reads as its inside."""
    while len(core) >= 2 and core[0].kind == LP and core[-1].kind == RP and _matching_paren(core, 0) == len(core) - 1:
        core = core[1:-1]
    return core


def _decimals(tok: _Tok) -> int:
    return len(tok.text.split(".")[1]) if "." in tok.text else 0


def _is_simple_fraction(body: list[_Tok]) -> bool:
    kinds = [t.kind for t in body]
    if kinds == [NUM, OP, NUM] and body[1].text == "/":
        return True
    return kinds == [FRAC, LP, NUM, RP, LP, NUM, RP] or (
        kinds == [NUM, FRAC, LP, NUM, RP, LP, NUM, RP] and _mixed_number_at(body, 0)
    )


def _close(exact: Fraction, shown: Fraction, decimals: int) -> bool:
    """``shown`` is ``exact`` rounded or truncated to ``decimals`` places."""
    ulp = Fraction(1, 10**decimals)
    diff = exact - shown
    if abs(diff) * 2 <= ulp:
        return True
    return 0 <= diff < ulp if shown >= 0 else -ulp < diff <= 0


def _compare(a: _Side, b: _Side, integer_context: bool) -> bool | None:
    """True (agree), False (disagree) or None (can't tell: a change of units, or a floor or
    ceiling where the step speaks of one)."""
    if a.value == b.value:
        return True
    if a.stated and b.stated and (a.marked or b.marked):
        return None  # "$0.054 = 5.4 cents", "1 foot^2 = 144 inches^2": two quantities, no computation
    for x, y in ((a, b), (b, a)):
        for shown, decimals in y.stated:
            if x.value == shown or (decimals > 0 and _close(x.value, shown, decimals)):
                return True
    tol = max(a.rel_tol, b.rel_tol)
    if tol and abs(a.value - b.value) <= tol * max(abs(a.value), abs(b.value)):
        return True
    if integer_context:
        for x, y in ((a, b), (b, a)):
            if y.stated and y.value.denominator == 1 and y.value in (math.floor(x.value), math.ceil(x.value)):
                return None
    return False


# ---------------------------------------------------------------------------------------
# Finding equations
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Equation:
    """One checked pair of adjacent sides: ``left = right`` and whether they agree."""

    left: str
    right: str
    correct: bool


@dataclass
class StepCheck:
    """What the calculator found in one step."""

    equations: list[Equation] = field(default_factory=list)
    #: '=' signs whose sides could not both be read as arithmetic
    unchecked: int = 0

    @property
    def right(self) -> int:
        return sum(e.correct for e in self.equations)

    @property
    def wrong(self) -> int:
        return sum(not e.correct for e in self.equations)

    @property
    def verdict(self) -> str:
        """``"wrong"``, ``"right"`` or ``"neutral"`` (nothing checkable)."""
        return "wrong" if self.wrong else "right" if self.right else "neutral"


_UNCHECKABLE = object()


def _try_side(toks: list[_Tok], max_digits: int, max_ops: int):
    try:
        return _evaluate(toks, max_digits, max_ops)
    except _ParseError:
        return None
    except _Uncheckable:
        return _UNCHECKABLE


def _starts_side(t: _Tok) -> bool:
    return t.kind in _OPERAND_START or (t.kind == OP and t.text == "-")


def _left_side(
    part: list[_Tok], max_digits: int, max_ops: int, after_eq: bool = False
) -> tuple[_Side, list[_Tok]] | None:
    """Longest parseable suffix of ``part`` that starts at a clean cut.

    ``after_eq``: the part also follows an '=' ("= 6 and 6 + 1 ="), so joining words may be cut.
    """
    links = _CONNECTORS - _JOINERS if after_eq else _CONNECTORS
    part = _after_unmatched_paren(part)
    n = len(part)
    starts = [
        j for j in range(1, n)
        if part[j - 1].kind == WORD and _starts_side(part[j]) and not (part[j].kind == LP and part[j].attached)
    ][-_MAX_CANDIDATES:]  # "(10)" after words may start a side; "sqrt(16)" is a call
    if n and _starts_side(part[0]):
        starts.insert(0, 0)
    for j in starts:
        if j > 0:
            k = j
            while k > 0 and part[k - 1].kind == WORD:
                k -= 1
            before = part[k - 1] if k > 0 else None
            if before is not None and (
                before.kind not in _OPERAND_END or any(w.text.lower() in links for w in part[k:j])
            ):
                continue
        side = _try_side(part[j:], max_digits, max_ops)
        if side is _UNCHECKABLE:
            return None
        if side is not None:
            if (j > 0 and side.stated) or (side.simple and side.has_units):
                # "Cost of 3 apples = 3*2", "60 minutes = 1 hour", "5 pairs = 5*2": a label or
                # a change of units, not a computation
                return None
            return side, part[j:]
    return None


def _right_side(
    part: list[_Tok], max_digits: int, max_ops: int, before_eq: bool = False
) -> tuple[_Side, list[_Tok]] | None:
    """Longest parseable prefix of ``part`` that ends at a clean cut (``before_eq``: see _left_side)."""
    links = _CONNECTORS - _JOINERS if before_eq else _CONNECTORS
    part = _before_unmatched_paren(part)
    n = len(part)
    if not n or not (_starts_side(part[0]) or (part[0].kind == OP and part[0].text == "+")):
        return None
    ends = [
        j for j in range(1, n)
        if part[j - 1].kind in _OPERAND_END and (part[j].kind == WORD or (part[j].kind == LP and not part[j].attached))
    ][:_MAX_CANDIDATES]
    for j in [n, *reversed(ends)]:
        if j < n and part[j].kind == LP:
            # "= $0.20 (20 cents)": a spaced parenthesis after the value, then nothing or words
            k = _matching_paren(part, j)
            if k is None or (k + 1 < n and part[k + 1].kind != WORD):
                continue
        elif j < n:
            k = j
            while k < n and part[k].kind == WORD:
                k += 1
            after = part[k] if k < n else None
            if after is not None and (
                after.kind not in _OPERAND_START or any(w.text.lower() in links for w in part[j:k])
            ):
                continue
        side = _try_side(part[:j], max_digits, max_ops)
        if side is _UNCHECKABLE:
            return None
        if side is not None:
            return side, part[:j]
    return None


def _after_unmatched_paren(part: list[_Tok]) -> list[_Tok]:
    """``(because 3 + 4 = 7)``, ``\\boxed{3+4=7}``: an equation inside an open parenthesis."""
    open_at: list[int] = []
    for k, t in enumerate(part):
        if t.kind == LP:
            open_at.append(k)
        elif t.kind == RP and open_at:
            open_at.pop()
    return part[open_at[-1] + 1:] if open_at else part


def _before_unmatched_paren(part: list[_Tok]) -> list[_Tok]:
    depth = 0
    for k, t in enumerate(part):
        depth += (t.kind == LP) - (t.kind == RP)
        if depth < 0:
            return part[:k]
    return part


def _matching_paren(toks: list[_Tok], j: int) -> int | None:
    depth = 0
    for k in range(j, min(len(toks), j + 4 * _MAX_DEPTH)):
        depth += (toks[k].kind == LP) - (toks[k].kind == RP)
        if depth == 0:
            return k
    return None


def _render(toks: list[_Tok]) -> str:
    return " ".join(t.text for t in toks)


def _scan_window(text: str, max_chars: int) -> str:
    """The part of a step the calculator reads: at most ``max_chars``, never ending mid-number."""
    if len(text) <= max_chars:
        return text
    window = text[:max_chars]
    cut = max(window.rfind("\n"), window.rfind(". "), window.rfind("? "), window.rfind("! "), window.rfind(";"))
    return window[:cut] if cut > 0 else ""


def check_step(text: str, *, max_digits: int = 200, max_ops: int = 200, max_chars: int = 8_000) -> StepCheck:
    """Find and recompute every equation stated in ``text`` (the rules are in the module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"a step must be a string, got {type(text).__name__}")
    window = _scan_window(text, max_chars)
    integer_context = bool(_INTEGER_CONTEXT.search(window))
    result = StepCheck()
    segment: list[_Tok] = []
    for t in [*_tokenize(window), _Tok(BOUND, "", -1)]:
        if t.kind != BOUND:
            segment.append(t)
            continue
        if any(s.kind == EQ for s in segment):
            _check_segment(segment, result, max_digits, max_ops, integer_context)
        segment = []
    return result


def _check_segment(
    segment: list[_Tok], result: StepCheck, max_digits: int, max_ops: int, integer_context: bool
) -> None:
    parts: list[list[_Tok]] = [[]]
    for t in segment:
        if t.kind == EQ:
            parts.append([])
        else:
            parts[-1].append(t)
    last = len(parts) - 2
    for i, (left_part, right_part) in enumerate(zip(parts, parts[1:])):
        if len(result.equations) + result.unchecked >= _MAX_EQUATIONS:
            result.unchecked += 1
            continue
        left = _left_side(left_part, max_digits, max_ops, after_eq=i > 0)
        right = _right_side(right_part, max_digits, max_ops, before_eq=i < last)
        verdict = None if left is None or right is None else _compare(left[0], right[0], integer_context)
        if verdict is None:
            result.unchecked += 1
        else:
            result.equations.append(Equation(_render(left[1]), _render(right[1]), verdict))


# ---------------------------------------------------------------------------------------
# The PRM
# ---------------------------------------------------------------------------------------


class CalculatorPRM:
    """Zero-parameter PRM: each step's score says whether the arithmetic it states is right.

    ``max_chars`` (an addition to the issue's signature) bounds how much of each step is read.
    """

    num_parameters = 0

    def __init__(
        self,
        *,
        wrong_score: float = 0.05,
        right_score: float = 0.95,
        neutral_score: float = 0.5,
        max_digits: int = 200,
        max_ops: int = 200,
        name: str = "calc",
        max_chars: int = 8_000,
    ) -> None:
        for label, v in (("wrong_score", wrong_score), ("right_score", right_score), ("neutral_score", neutral_score)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{label} must be a number in [0, 1], got {v!r}")
        for label, v in (("max_digits", max_digits), ("max_ops", max_ops), ("max_chars", max_chars)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{label} must be a positive integer, got {v!r}")
        self.name = name
        self.wrong_score = float(wrong_score)
        self.right_score = float(right_score)
        self.neutral_score = float(neutral_score)
        self.max_digits = max_digits
        self.max_ops = max_ops
        self.max_chars = max_chars
        # steps are scored independently of their context, so the same step text (beam
        # search re-scores every prefix) can be answered from a cache
        self._check = lru_cache(maxsize=16_384)(self._check_uncached)

    def _check_uncached(self, step: str) -> StepCheck:
        return check_step(step, max_digits=self.max_digits, max_ops=self.max_ops, max_chars=self.max_chars)

    def check(self, step: str) -> StepCheck:
        """The equations found in one step and their verdicts (for analysis and explanations)."""
        if not isinstance(step, str):
            raise TypeError(f"a step must be a string, got {type(step).__name__}")
        return self._check(step)

    def step_score(self, step: str) -> float:
        verdict = self.check(step).verdict
        if verdict == "wrong":
            return self.wrong_score
        return self.right_score if verdict == "right" else self.neutral_score

    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        out: list[StepScores] = []
        for idx, item in enumerate(items):
            try:
                _question, steps = item
            except (TypeError, ValueError):
                raise TypeError(f"item {idx} must be a (question, steps) pair, got {item!r:.80}") from None
            if isinstance(steps, str):
                raise TypeError(f"item {idx}: steps must be a sequence of strings, not one string")
            scores = [self.step_score(s) for s in steps]
            tokens = sum(len(_COUNT_TOKENS.findall(_scan_window(s, self.max_chars))) for s in steps)
            out.append(StepScores(scores=scores, tokens=tokens))
        return out

    def __repr__(self) -> str:
        return f"CalculatorPRM(name={self.name!r})"


__all__ = ["CalculatorPRM", "Equation", "StepCheck", "check_step"]
