"""Answers: pull one out of a model's response, key it for voting, grade it against gold.

Grading has to survive anything a policy writes. math-verify (sympy underneath) decides
symbolic equivalence well, but sympy will happily try to evaluate ``9^{9^{9^{9}}}``, and
math-verify's own time limit is ``signal.alarm``, which only works in the main thread
(it raises ``ValueError`` elsewhere) and only in whole seconds. So the expensive part
runs in a small pool of worker processes that the caller can kill when a comparison
overruns: the bound holds from any thread, even inside C code that ignores signals.
Obvious cases never reach sympy: exact / normalised / numeric comparisons are decided
here, and inputs that look pathological (exponent towers, huge exponents or
factorials, very long strings) are compared as strings only.

This module imports only the standard library at the top, and nothing from ttsopt, so
the worker can load it straight from its file (see ``_WORKER_BOOT``).
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")
_ANSWER_RE = re.compile(r"answer\s*(?:is|:|=)\s*:?", re.IGNORECASE)
_LATEX_FRAC = r"-?\\[dt]?frac\s*(?:\{\s*-?\d+\s*\}|\d)\s*(?:\{\s*\d+\s*\}|\d)"
_PLAIN_NUM = r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\d.,])(?:{_LATEX_FRAC}|{_PLAIN_NUM})")


def _balanced(text: str, start: int) -> int | None:
    """Index just past the brace group opening at ``text[start] == '{'``; None if unclosed."""
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2  # \{ and \} are literal braces, not grouping
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (``\\boxed 5`` too)."""
    found = None
    for m in _BOX_RE.finditer(text):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            end = _balanced(text, i)
            if end is None:
                continue  # a truncated generation: the box never closed
            content = text[i + 1 : end - 1].strip()
        else:
            content = re.match(r"[^\s$]*", text[i:]).group(0)
        if content:
            found = content
    return found


def _clean_tail(answer: str) -> str:
    """Strip what surrounds an answer in prose: ``$``, ``\\(..\\)``, markdown bold, final period."""
    s = answer.strip()
    prev = None
    while s != prev:
        prev = s
        s = s.strip().strip("*").strip()
        for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
                s = s[len(left) : len(s) - len(right)]
        s = s.rstrip(".").rstrip("$").lstrip("$")
    return s.strip()


def _final_number(text: str) -> str | None:
    last = None
    for last in _NUMBER_RE.finditer(text):
        pass
    if last is None:
        return None
    num = last.group(0)
    start = last.start()
    if num.startswith("-") and start > 0 and (text[start - 1].isalnum() or text[start - 1] in ")]}"):
        num = num[1:]  # "10-3": a subtraction, not a negative number
    if "\\" not in num:
        num = num.replace(",", "")
    return num


def _answer_phrase(text: str) -> str | None:
    last = None
    for last in _ANSWER_RE.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end() :].lstrip(" \t")
    line = rest.split("\n", 1)[0]
    # A sentence ends at a period followed by a space; "3.5" keeps its point.
    line = re.split(r"\.(?=\s)", line, maxsplit=1)[0]
    ans = _clean_tail(line)
    if not ans:
        return None
    if len(ans.split()) > 3 and "\\" not in ans:
        # "the answer is probably 12 because ...": keep the number, not the prose
        return _final_number(ans.split(",")[0]) or ans
    return ans


def extract_answer(text: str | None) -> str | None:
    """The final answer a response commits to, or None when it commits to nothing.

    Precedence follows how confidently a response marks its answer: the last complete
    ``\\boxed{}`` (also ``\\fbox``), then the last "The answer is X" / "Answer: X", then
    the last number in the text (``1,000``, ``-2.5``, ``3/4``, ``\\frac{3}{4}``).
    """
    if not text:
        return None
    for rule in (_last_boxed, _answer_phrase, _final_number):
        ans = rule(text)
        if ans:
            return ans
    return None


# ---------------------------------------------------------------------------------------
# Normalisation (a voting key: cheap, no sympy)
# ---------------------------------------------------------------------------------------

_UNIT_RE = re.compile(r"^(?P<num>[-\d.,/{}\\a-z]*?\d\}?)\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z ]*\}(?:\^\{?[23]\}?)?$")
_WORDS_AFTER_NUMBER = re.compile(r"^(?P<num>-?[\d.,/]*\d)\s+[A-Za-z][A-Za-z ]*$")
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|textit|textrm|mbox|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\q?quad(?![A-Za-z])|\\displaystyle|~")
_DECIMAL_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_FRACTION_RE = re.compile(r"([-+]?\d+)/(\d+)")
_LATEX_FRACTION_RE = re.compile(r"(-?)\\frac\{([-+]?\d+)\}\{(\d+)\}")


def as_fraction(s: str) -> Fraction | None:
    """Exact value of a plain rational (``-3``, ``0.25``, ``3/4``, ``\\frac{3}{4}``), else None.

    Short inputs only: ``Fraction`` of a thousand-digit string is slow, and of
    scientific notation unbounded, so neither is attempted.
    """
    s = s.strip().replace(" ", "")
    if not s or len(s) > 60:
        return None
    try:
        if _DECIMAL_RE.fullmatch(s):
            return Fraction(s)
        if m := _FRACTION_RE.fullmatch(s):
            return Fraction(int(m.group(1)), int(m.group(2))) if int(m.group(2)) else None
        if m := _LATEX_FRACTION_RE.fullmatch(s):
            if not int(m.group(3)):
                return None
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return -value if m.group(1) else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _format_fraction(value: Fraction) -> str:
    """Integers as integers, terminating decimals as decimals, the rest as ``p/q``."""
    if value.denominator == 1:
        return str(value.numerator)
    den, twos, fives = value.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value.numerator) * 10**places // value.denominator
    digits = str(scaled).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}".rstrip("0")


def normalize_answer(answer: str | None) -> str | None:
    """A canonical key for an answer, so that votes for ``\\dfrac{1}{2}``, ``1/2`` and ``0.5`` pool.

    Purely textual: spacing, ``$``, ``\\text{}``, ``\\left/\\right``, units after a
    number, degree and percent signs, thousands separators and trailing periods go;
    plain numbers become one canonical form. None for an empty answer.
    """
    if answer is None:
        return None
    s = str(answer).strip()
    if _BOX_RE.match(s):
        s = _last_boxed(s) or s
    s = _clean_tail(s.replace("\\$", ""))
    s = _SPACING.sub(" ", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])\s*", "", s)
    s = s.replace("{,}", "")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|°|\\%|%", "", s)
    s = re.sub(r"\\(?:text|mbox)\{\s*(?:degrees?|percent)\s*\}", "", s).strip()
    if m := _UNIT_RE.match(s):
        s = m.group("num")
    for _ in range(3):  # nested \text{\textbf{...}} unwraps in a few rounds
        s = _TEXT_WRAP.sub(r"\1", s)
    if m := _WORDS_AFTER_NUMBER.match(s.strip()):
        s = m.group("num")  # "12 apples" -> "12"
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\{[^{}]*\})(\d)", r"\\frac\1{\2}", s)
    s = re.sub(r"\\frac(\d)(\{)", r"\\frac{\1}\2", s)
    s = re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", s)
    s = re.sub(r"\\(?:leq|le)(?![A-Za-z])", r"\\le", s)
    s = re.sub(r"\\(?:geq|ge)(?![A-Za-z])", r"\\ge", s)
    s = re.sub(r"\\(?:neq|ne)(?![A-Za-z])", r"\\ne", s)
    s = s.rstrip(".").rstrip(",")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    if (m := re.fullmatch(r"[A-Za-z]=([^=]+)", s)) is not None:
        s = m.group(1)  # "x=5" votes with "5"
    value = as_fraction(s)
    if value is not None:
        return _format_fraction(value)
    if re.fullmatch(r"[A-Za-z]{2,}", s):
        s = s.lower()
    return s or None


# ---------------------------------------------------------------------------------------
# Equivalence
# ---------------------------------------------------------------------------------------

_PROSE_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_STRIP_FOR_WORDS = re.compile(r"\\(?:begin|end|text|mbox|mathrm|textbf|operatorname)\s*\{[^{}]*\}")


def _looks_like_response(text: str) -> bool:
    """Whether ``text`` is a model's full response (extract first) or already a bare answer."""
    s = text.strip()
    if _BOX_RE.search(s) or _ANSWER_RE.search(s) or "\n" in s or len(s) > 200:
        return True
    return len(_PROSE_WORD.findall(_STRIP_FOR_WORDS.sub(" ", s))) >= 3


def _bare(text: str) -> str | None:
    if _looks_like_response(text):
        return extract_answer(text)
    return _clean_tail(text) or None


MAX_SYMBOLIC_CHARS = 400
# Towers (9^{9^{9}} is 9^387420489: small digits, no bound), exponents or factorials of a
# million and more. A legitimate nested exponent such as e^{x^2} is then compared as text only.
_NESTED_POWER = re.compile(r"\^\s*\{[^{}]*\^|\^\s*\w+\s*\^|\*\*\s*\(?[\w.]+\)?\s*\*\*")
_BIG_EXPONENT = re.compile(r"(?:\^|\*\*)\s*\{?\s*\(?\s*\d{6,}")
_BIG_FACTORIAL = re.compile(r"(?:\d{5,}|[)}])\s*!")


def _pathological(s: str) -> bool:
    """Inputs sympy could spend unbounded time or memory on: never worth a symbolic check."""
    return (
        len(s) > MAX_SYMBOLIC_CHARS
        or bool(_NESTED_POWER.search(s))
        or bool(_BIG_EXPONENT.search(s))
        or bool(_BIG_FACTORIAL.search(s))
        or bool(re.search(r"\d{200,}", s))
    )


def is_equivalent(response: str | None, gold: str | None, *, timeout_s: float = 5.0) -> bool:
    """Whether a response (full text or bare answer) gives the gold answer, decided within ``timeout_s``.

    Cheap checks decide most pairs: equal normalised keys, or two plain rationals
    (equal when they agree to six decimal places, as math-verify rounds). Everything else goes to
    math-verify in a worker process that is killed if it overruns; a timeout counts as
    not equivalent and is logged. Safe to call from any thread.
    """
    if response is None or gold is None:
        return False
    pred = _bare(str(response))
    gold_ans = _bare(str(gold)) if _BOX_RE.search(str(gold)) else (_clean_tail(str(gold)) or None)
    if pred is None or gold_ans is None:
        return False
    pred_key, gold_key = normalize_answer(pred), normalize_answer(gold_ans)
    if pred_key is None or gold_key is None:
        return False
    if pred_key == gold_key:
        return True
    a, b = as_fraction(pred_key), as_fraction(gold_key)
    if a is not None and b is not None:
        if a.denominator == 1 and b.denominator == 1:
            return False  # different integers: no rounding makes 2000000 equal 2000001
        return round(float(a), 6) == round(float(b), 6)  # "0.333333" is 1/3, as math-verify rounds
    if _pathological(pred) or _pathological(gold_ans):
        logger.debug("is_equivalent: not checking pathological input symbolically: %.80r", pred)
        return False
    return _symbolic_equal(pred, gold_ans, float(timeout_s))


@functools.lru_cache(maxsize=8192)
def _symbolic_equal(pred: str, gold: str, timeout_s: float) -> bool:
    """math-verify's verdict, bounded by ``timeout_s`` of wall-clock time (cached: grading repeats)."""
    if os.name == "posix":
        try:
            return _pool().compare(pred, gold, timeout_s)
        except _WorkerUnavailable as e:
            logger.warning("math-verify worker unavailable (%s); checking in-process", e)
    return _in_process_equal(pred, gold, timeout_s)


def _wrap(answer: str) -> str:
    return "\\boxed{" + answer + "}"


def _math_verify_equal(pred: str, gold: str, whole_seconds: int | None) -> bool:
    """The math-verify comparison itself; ``whole_seconds=None`` disables its signal timeout."""
    from math_verify import parse, verify

    gold_parsed = parse(_wrap(gold), parsing_timeout=whole_seconds)
    pred_parsed = parse(_wrap(pred), parsing_timeout=whole_seconds)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=whole_seconds))


def _inner_seconds(timeout_s: float) -> int:
    # Three guarded steps (two parses, one verify) share the budget; alarm() counts whole seconds.
    return max(1, int(timeout_s / 2))


def _in_process_equal(pred: str, gold: str, timeout_s: float) -> bool:
    """Fallback without a worker: signals in the main thread, an abandoned daemon thread elsewhere."""
    if threading.current_thread() is threading.main_thread():
        try:
            return _math_verify_equal(pred, gold, _inner_seconds(timeout_s))
        except Exception:
            logger.debug("math-verify failed", exc_info=True)
            return False
    result: list[bool] = []

    def run() -> None:
        try:
            result.append(_math_verify_equal(pred, gold, None))
        except Exception:
            result.append(False)

    worker = threading.Thread(target=run, daemon=True, name="ttsopt-verify")
    worker.start()
    worker.join(timeout_s)
    if not result:
        logger.warning("is_equivalent: timed out after %.1fs comparing %.80r with %.80r", timeout_s, pred, gold)
        return False
    return result[0]


# ---------------------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------------------

# The worker loads this very file as a standalone module: it needs math-verify, not ttsopt,
# so it starts the same way whether ttsopt is installed, editable, or on a sys.path hack.
_WORKER_BOOT = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_ttsopt_grading_worker', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "module._worker_main()\n"
)
WORKER_START_TIMEOUT_S = 120.0
WORKER_MEMORY_LIMIT = 3 * 1024**3


class _WorkerUnavailable(RuntimeError):
    pass


def _worker_main() -> None:
    """Serve comparisons over stdin/stdout, one JSON object a line, until stdin closes."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_LIMIT, WORKER_MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # the parent logs timeouts
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints, from Python or C, go to stderr and cannot corrupt the protocol
    import math_verify  # noqa: F401  (load sympy before saying ready)

    protocol.write('{"ready": true}\n')
    protocol.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            reply = {"ok": _math_verify_equal(req["pred"], req["gold"], int(req["seconds"]) or None)}
        except BaseException as e:  # noqa: BLE001 - a reply must always go back
            reply = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:200]}"}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()


class _Worker:
    """One worker process and a line reader over its stdout that honours deadlines."""

    def __init__(self) -> None:
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_BOOT, os.path.abspath(__file__)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
            )
        except OSError as e:
            raise _WorkerUnavailable(f"cannot start {sys.executable}: {e}") from e
        self._buffer = b""
        ready = self._read_line(time.monotonic() + WORKER_START_TIMEOUT_S)
        if ready is None or not json.loads(ready).get("ready"):
            detail = self._stderr_tail()
            self.kill()
            raise _WorkerUnavailable(f"worker did not start: {detail or 'no output'}")

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace").strip()[-500:]
        except (OSError, ValueError):
            return ""

    def _read_line(self, deadline: float) -> str | None:
        """The next line, or None on EOF or when the deadline passes."""
        import select

        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def compare(self, pred: str, gold: str, timeout_s: float, inner_seconds: int) -> bool | None:
        """True/False, or None when the worker overran or died (it is killed then).

        ``inner_seconds`` is math-verify's own signal timeout inside the worker (0: none);
        it lets an ordinary slow comparison end without losing the warm worker.
        """
        request = json.dumps({"pred": pred, "gold": gold, "seconds": inner_seconds})
        deadline = time.monotonic() + timeout_s
        try:
            self.proc.stdin.write(request.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.kill()
            return None
        line = self._read_line(deadline)
        if line is None:
            self.kill()
            return None
        reply = json.loads(line)
        if "error" in reply:
            logger.debug("math-verify error: %s", reply["error"])
        return bool(reply.get("ok"))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass


class _Pool:
    """Up to ``size`` warm workers shared by all threads; an overrunning one is replaced."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pid = os.getpid()
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._started = 0
        self._lock = threading.Lock()
        self._all: list[_Worker] = []

    def _acquire(self) -> _Worker:
        while True:
            with self._lock:
                try:
                    return self._idle.get_nowait()
                except queue.Empty:
                    pass
                if self._started < self.size:
                    self._started += 1
                    break
            try:  # every busy worker frees up (or dies) within its caller's timeout
                return self._idle.get(timeout=0.05)
            except queue.Empty:
                continue
        try:
            worker = _Worker()
        except BaseException:
            with self._lock:
                self._started -= 1
            raise
        with self._lock:
            self._all.append(worker)
        return worker

    def _release(self, worker: _Worker) -> None:
        if worker.alive():
            self._idle.put(worker)
            return
        with self._lock:
            self._started -= 1
            if worker in self._all:
                self._all.remove(worker)

    def compare(self, pred: str, gold: str, timeout_s: float, *, inner_seconds: int | None = None) -> bool:
        if inner_seconds is None:
            inner_seconds = _inner_seconds(timeout_s)
        for attempt in range(2):
            started = time.monotonic()
            worker = self._acquire()
            try:
                was_alive = worker.alive()
                verdict = worker.compare(pred, gold, timeout_s, inner_seconds) if was_alive else None
            finally:
                self._release(worker)
            if verdict is not None:
                return verdict
            overran = was_alive and time.monotonic() - started >= timeout_s * 0.999
            if overran or attempt:
                logger.warning(
                    "is_equivalent: timed out after %.1fs comparing %.80r with %.80r", timeout_s, pred, gold
                )
                return False
            # the worker had died between calls (not our input's fault): one retry on a fresh one
        return False

    def close(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
        if os.getpid() != self.pid:
            return  # a forked child must not kill its parent's workers
        for worker in workers:
            worker.kill()


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> _Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            size = int(os.environ.get("TTSOPT_VERIFY_WORKERS", min(2, os.cpu_count() or 1)))
            _POOL = _Pool(max(1, size))
        return _POOL


@atexit.register
def _close_pool() -> None:
    if _POOL is not None:
        _POOL.close()


__all__ = ["extract_answer", "normalize_answer", "is_equivalent", "as_fraction"]
