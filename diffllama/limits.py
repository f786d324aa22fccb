"""Limits on what one request may ask for, so one visitor cannot hold the server for everyone:
input length (checked before anything is tokenised), tokens run through a model, and time.

    DIFFLLAMA_LENS_MAX_INPUT_CHARS    characters per text input (default 100,000)
    DIFFLLAMA_LENS_MAX_TOKENS         tokens one request may run through each model, a long QA context's
                                      windows together (default 8,192: 16 windows of 512, 4 of 2,048)
    DIFFLLAMA_LENS_REQUEST_SECONDS    time one request may compute (default 60); unset by the library
                                      itself, set by the app around each request

One rule for an input's size, whatever the task, applied to its token count before any trace
(``check_tokens``): an input read in one pass (classification, tagging, a generation prompt, a map of any
text) must fit the model's trained positions, and every request the token limit; a QA context is read
in windows, all of them within the token limit. What exceeds them is refused with a message naming the
input, its token count and the limit, never cut. Characters are no measure of cost: an emoji or a
combining accent is one character and several tokens (a byte-level tokeniser gives 3 to 4 per emoji),
so 10,000 emoji are 30,000 tokens; counting tokens costs a tokeniser call (≈ 0.1 s for the longest
input), a trace of them seconds per window.
"""

from __future__ import annotations

import contextvars
import os
import time
from contextlib import contextmanager

CHARS_ENV, TOKENS_ENV, SECONDS_ENV = ("DIFFLLAMA_LENS_MAX_INPUT_CHARS", "DIFFLLAMA_LENS_MAX_TOKENS",
                                      "DIFFLLAMA_LENS_REQUEST_SECONDS")


class TimeLimitError(ValueError):
    """A request that ran past its time limit; stopped at the next layer it entered."""


def max_input_chars() -> int:
    return int(os.environ.get(CHARS_ENV, 100_000))


def max_tokens() -> int:
    return int(os.environ.get(TOKENS_ENV, 8192))


def request_seconds() -> float:
    return float(os.environ.get(SECONDS_ENV, 60))


def check_text(text, what: str = "text") -> str:
    """A text input as the runners need it: a non-empty string, within the length limit (checked on
    the characters, before any tokeniser sees it), encodable as UTF-8."""
    if text is None or isinstance(text, str) and not text.strip():
        raise ValueError(f"the {what} is empty: type something to run the model on")
    return check_length(text, what)


def check_length(text, what: str = "text") -> str:
    """A string within the length limit, encodable as UTF-8 (empty allowed)."""
    if not isinstance(text, str):
        raise ValueError(f"the {what} must be text, not {type(text).__name__}")
    limit = max_input_chars()
    if len(text) > limit:
        raise ValueError(f"the {what} is {len(text):,} characters long; this server takes at most {limit:,}: shorten it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate (e.g. half of an emoji) sent through the API
        raise ValueError(f"the {what} holds an invalid character (U+{ord(text[error.start]):04X}, half of a "
                         f"surrogate pair) at position {error.start}; remove it") from None
    return text


def check_tokens(tokens: int, what: str, chars: int, how: str = "",
                 positions: tuple[str, int, int] | None = None) -> None:
    """Refuse, before any trace, an input with more tokens than a model may read: ``tokens`` the ``what``
    (``chars`` characters long) comes to, ``how`` saying how they are read. ``positions``, for an input
    read in one pass: (the model's name, its trained positions, how many of them stay free for new
    tokens); in any case the server's token limit per request."""
    limit = max_tokens()
    reason = f"this server runs at most {limit:,} tokens through a model per request"
    if positions is not None and positions[1] - positions[2] <= limit:
        source, trained, free = positions
        limit = trained - free
        reason = (f"{source} was trained on {trained:,} positions, so it reads at most {limit:,} tokens"
                  + (f" ({free} kept for a new token)" if free else ""))
    if tokens > limit:
        raise ValueError(f"the {what} is {tokens:,} tokens{how}; {reason} (emoji, accents and rare characters take "
                         f"several tokens each): shorten the {what} to about {max(1, chars * limit // tokens):,} characters")


_DEADLINE: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("lens_deadline", default=None)


@contextmanager
def time_limit(seconds: float | None = None):
    """Within this block (and threads started with a copy of its context), model layers stop the
    request once ``seconds`` (default: the configured limit) have passed."""
    seconds = request_seconds() if seconds is None else seconds
    token = _DEADLINE.set((time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def deadline() -> tuple[float, float] | None:
    """The current request's (deadline, seconds), to carry into a generator's later steps."""
    return _DEADLINE.get()


@contextmanager
def until(limit: tuple[float, float] | None):
    """Resume under a deadline taken with ``deadline()`` (a streamed response runs step by step)."""
    token = _DEADLINE.set(limit)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def check_time() -> None:
    limit = _DEADLINE.get()
    if limit is not None and time.monotonic() > limit[0]:
        raise TimeLimitError(f"this request ran past the server's limit of {limit[1]:.0f} s per request; "
                             "shorten the input or ask for less")


def watch(model) -> None:
    """Check the time limit each time one of the model's attention layers runs: forward passes,
    generation steps and the per-layer recomputation behind every attention view."""
    for layer in model.base_model.layers:
        layer.self_attn.register_forward_pre_hook(lambda module, args: check_time())
