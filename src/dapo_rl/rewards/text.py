"""Answer extraction and string normalisation shared by the built-in verifiers.

Everything here is linear in the length of its input, and callers pass only a capped tail
of a completion, so a 200 kB completion or 5000 nested braces cost microseconds.

Choices:
- ``last_answer_line``: the last ``Answer: ...`` (case-insensitive) and the rest of that line,
  the DAPO-Math output format.
- ``last_boxed``: the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces; escaped
  braces ``\\{ \\}`` do not count; nesting deeper than ``MAX_DEPTH`` is not an answer.
- ``normalize``: the DAPO reference rule for exact matching (strip ``$``, spaces, a trailing
  period, ``\\boxed``/``\\text`` wrappers, thousands commas, a leading ``+``, "x = "...).
- ``same_answer``: exact match after ``normalize``; plain numbers compare by value, so
  "07" == "7" and "0.50" == "0.5".
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MAX_DEPTH = 64  # brace nesting beyond this is not a plausible final answer
MAX_NUMBER_CHARS = 64  # longer digit strings are compared as strings, never converted

_ANSWER_LINE = re.compile(r"answer\s*:\s*([^\n]+)", re.IGNORECASE)
_HASH_LINE = re.compile(r"####\s*([^\n]*)")
_BOXED = re.compile(r"\\(?:boxed|fbox)")
_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_UNIT_AFTER_NUMBER = re.compile(
    r"(-?[\d.,]*\d)\s*(?:\\(?:text|mbox|mathrm)\s*\{\s*[A-Za-z ]*\}|(?:\s+[A-Za-z]{2,})+)"
)
_FRAC_SHORT = re.compile(r"\\frac(?:\s*(\d)|\{([^{}]*)\})(?:\s*(\d)|\{([^{}]*)\})")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d)")
_SPACING = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "\\displaystyle")


def tail(text: str, chars: int) -> str:
    """The last ``chars`` characters of ``text`` (answers sit at the end)."""
    return text[-chars:] if len(text) > chars else text


def _last(pattern: re.Pattern, text: str) -> re.Match | None:
    matches = list(pattern.finditer(text))
    return matches[-1] if matches else None


def last_answer_line(text: str) -> tuple[int, str] | None:
    """(position, content) of the last ``Answer:`` line, or None."""
    match = _last(_ANSWER_LINE, text)
    return (match.start(), match.group(1)) if match else None


def last_hash_answer(text: str) -> tuple[int, str] | None:
    """(position, content) of the last GSM8K-style ``#### ...`` line, or None."""
    match = _last(_HASH_LINE, text)
    return (match.start(), match.group(1)) if match else None


def braced(text: str, start: int) -> str | None:
    """Content of the ``{...}`` group opening at ``text[start]``, or None if unbalanced/too deep."""
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # an escaped character (\{, \}, \\) never opens or closes a group
            continue
        if ch == "{":
            depth += 1
            if depth > MAX_DEPTH:
                return None
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    return None


def last_boxed(text: str) -> tuple[int, str] | None:
    """(position, content) of the last ``\\boxed{...}``; also ``\\boxed 5``. None if malformed."""
    match = _last(_BOXED, text)
    if match is None:
        return None
    rest = match.end()
    while rest < len(text) and text[rest] == " ":
        rest += 1
    if rest < len(text) and text[rest] == "{":
        content = braced(text, rest)
        return None if content is None else (match.start(), content)
    word = re.match(r"[^\s$]+", text[rest:])
    return (match.start(), word.group(0)) if word else None


def latest(*found: tuple[int, str] | None) -> str | None:
    """Content of whichever marker occurs last in the text."""
    present = [f for f in found if f is not None]
    return max(present)[1] if present else None


def _strip_wrapping(answer: str) -> str:
    """``answer`` without the spaces, ``$`` and ``*`` around it and its trailing periods.

    One pass from each end: a period goes only when the character before it is not a
    period too ("1.." stays, an ellipsis is not punctuation). Stripping one character per
    round of a loop instead made a reference of 50,000 such characters cost a minute.
    """
    end = len(answer)
    while end:
        ch = answer[end - 1]
        if ch.isspace() or ch in "$*" or (ch == "." and answer[end - 2 : end - 1] != "."):
            end -= 1
        else:
            break
    start = 0
    while start < end and (answer[start].isspace() or answer[start] in "$*"):
        start += 1
    return answer[start:end]


def unwrap(answer: str) -> str:
    """Strip what surrounds an answer: spaces, ``$``, markdown ``*``, a trailing period, a box.

    Linear: the last box's content holds no other box (a later one would be the last), so
    after one unwrapping there is nothing left to unbox.
    """
    answer = _strip_wrapping(answer)
    if answer.startswith(("\\boxed", "\\fbox")):
        boxed = last_boxed(answer)
        if boxed is not None:
            answer = _strip_wrapping(boxed[1])
    return answer


def normalize(answer: str) -> str:
    """The DAPO reference normalisation of a final answer, for exact string matching."""
    answer = unwrap(answer)
    boxed = last_boxed(answer)
    if boxed is not None:
        answer = boxed[1]
    answer = answer.split("=")[-1]  # "x = 5" -> "5"
    for token in _SPACING:
        answer = answer.replace(token, "")
    answer = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    answer = answer.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\%", "")
    answer = answer.replace("\\$", "").replace("%", "")
    unit = _UNIT_AFTER_NUMBER.fullmatch(answer.strip())
    if unit:
        answer = unit.group(1)
    answer = _WRAPPER.sub(r"\1", answer)
    answer = _FRAC_SHORT.sub(lambda m: f"\\frac{{{m[1] or m[2]}}}{{{m[3] or m[4]}}}", answer)
    answer = _SQRT_SHORT.sub(r"\\sqrt{\1}", answer)
    answer = re.sub(r"\s+", "", answer).strip("$*")
    answer = answer.rstrip(".") if not answer.endswith("..") else answer
    if _THOUSANDS.fullmatch(answer):
        answer = answer.replace(",", "")
    if answer.startswith("+") and answer[1:2].isdigit():
        answer = answer[1:]
    return answer


def plain_number(text: str) -> Decimal | None:
    """The value of a plain decimal numeral ("07", "-2.50"), else None."""
    if len(text) > MAX_NUMBER_CHARS or not _PLAIN_NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def same_answer(predicted: str, reference: str) -> bool:
    """Exact match after ``normalize``; plain numbers compare by value ("07" == "7")."""
    pred, ref = normalize(predicted), normalize(reference)
    if not pred:
        return False
    if pred == ref:
        return True
    a, b = plain_number(pred), plain_number(ref)
    return a is not None and b is not None and a == b
