"""Bounded text for messages: a value or a message quoted from a file or a recipe can be arbitrarily large
(an alias bomb's expansion, a megabyte of random bytes), and an error message must stay readable."""

import reprlib
from typing import Any

MESSAGE_CHARS = 2000  # the most a printed error message shows
LINE_CHARS = 300  # the most a one-line reason (a failure in `status`) shows

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxlevel = 3


def shown(value: Any) -> str:
    """`repr(value)`, cut to a few dozen characters and elements per level (`[1, 2, ...]`)."""
    return _REPR.repr(value)


def bounded(text: str, limit: int = MESSAGE_CHARS) -> str:
    """`text`, or its start and end with what was left out said in between."""
    if len(text) <= limit:
        return text
    keep = (limit - 40) // 2
    return f"{text[:keep]} ... ({len(text) - 2 * keep} characters left out) ... {text[-keep:]}"


def one_line(text: str, limit: int = LINE_CHARS) -> str:
    """The first non-empty line of `text`, bounded."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return bounded(first, limit)
