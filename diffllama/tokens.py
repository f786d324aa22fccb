"""How a token is written for people: the one display rule every plot, table and caption uses.

Special tokens get readable names (``<s>`` → ``⟨s⟩``) so that no renderer mistakes them for markup
(plotly draws ``<s>`` as strike-through and drops ``</s>``); whitespace is made visible, because
`` the`` and ``the`` are different tokens. The result is plain text: renderers that interpret
markup (plotly, Markdown) escape it at their own edge."""

from __future__ import annotations

import functools

VISIBLE_WHITESPACE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
OTHER_WHITESPACE = "⎵"  # no-break and other unicode spaces


def display_token(token: str, special: bool = False) -> str:
    """``token`` as plain readable text: ``⟨name⟩`` for a special token, visible whitespace otherwise."""
    if special:
        name = token[1:-1] if len(token) > 2 and token[0] == "<" and token[-1] == ">" else token
        return f"⟨{name}⟩"
    if not token:
        return "∅"  # a token that decodes to nothing on its own (part of a multi-byte character)
    return "".join(VISIBLE_WHITESPACE.get(c, OTHER_WHITESPACE if c.isspace() else c) for c in token)


DISPLAYED_INPUTS = 8  # inputs whose display labels are kept (a few KB each): the views of a run ask again and again


def display_tokens(tokens: list[str], sequence_ids: list[int | None]) -> list[str]:
    """Every token of a trace for display; a ``None`` sequence id marks a special token. Worked out
    once per input (``_displayed``): every map, zoom and heat of a run labels the same tokens."""
    return list(_displayed(tuple(tokens), tuple(sequence is None for sequence in sequence_ids)))


@functools.lru_cache(maxsize=DISPLAYED_INPUTS)
def _displayed(tokens: tuple[str, ...], special: tuple[bool, ...]) -> tuple[str, ...]:
    return tuple(display_token(token, flag) for token, flag in zip(tokens, special))
