"""Text a visitor controls, made inert wherever the page shows it.

Gradio renders toasts (``gr.Error``, ``gr.Warning``, ``gr.Info``) and ``gr.HTML`` as sanitised HTML, and
``gr.Markdown`` as Markdown with HTML inside: sanitising strips scripts and event handlers but keeps
forms, images and links, so a stranger's ``<img src=…>`` or ``[link](…)`` would be drawn on the Space's
own page. Everything a visitor typed or put in a link passes through one of these two functions on its
way to the page (the UI's edge); text the app writes itself does not need to."""

from __future__ import annotations

import html
import re

_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>:])")


def for_html(text: object) -> str:
    """``text`` as HTML that shows exactly these characters: no element, entity or attribute survives."""
    return html.escape(str(text), quote=True)


def for_markdown(text: object) -> str:
    """``text`` as Markdown that shows exactly these characters: HTML escaped, and every Markdown
    punctuation mark backslash-escaped, so no link, image, emphasis, heading or autolink is formed."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", for_html(text))


def markdown_code(text: str) -> str:
    """Plain text (a token's display form) as a Markdown code span, so nothing in it is read as markup:
    fenced by more backticks than any run of them in the text (CommonMark's rule), so no backtick in
    it can close the span early."""
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", text)), default=0))
    return f"{fence} {text} {fence}" if fence != "`" else f"`{text}`"

