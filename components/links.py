"""Links that reopen a view: a tab, its models and inputs, and one of its attention views with the
view's controls, written as URL query parameters::

    http://host/?tab=qa&question=…&context=…&source_a=diffllama-qa&source_b=llama-qa&show=zoom&layer=2&…

Opening one selects the tab, fills its inputs, runs it and then the view: the numbers are recomputed,
never replayed. The link is the whole state and nothing is stored on the server, so it outlives a
restart and works on any server that has the models. (Gradio's ``gr.DeepLinkButton`` instead writes
every component's current value, figures included, to a file on the server and shows those values
again: the file grows with each click, goes when the cache is cleaned, and nothing is recomputed.)

Parameters are named as the endpoints name them: a tab's main action's parameters (``text``,
``prompt``, ``source_a``…) and its views' (``layer``, ``head``, ``kind``…). Reading a link checks
every value against what the tab's control accepts (type, range, choices); an unknown, repeated or
malformed parameter, or a link longer than ``MAX_LINK_CHARS``, is refused with a message naming it.

A text that would make the link too long travels packed: ``NAME.z`` carries NAME's text deflated
(zlib) and base64url-encoded, which fits a view of a 2K-token input (English text packs to about a
third). Such a link is used only when the plain one is too long.

No gradio and no torch here: the UI (``components.panel``) describes its controls as ``Field``s."""

from __future__ import annotations

import base64
import binascii
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlencode

# Whole URL, server address included. Proxies in front of a server refuse longer request lines
# (nginx's default buffer is 8 KB; uvicorn's own limit is 16 KB for the request line and headers).
MAX_LINK_CHARS = 8000
VIEWS = ("maps", "zoom", "overview", "compare")  # what ``show`` opens after the run (the maps always)
TAB, SHOW = "tab", "show"
# gradio reads these from the page's URL itself (?view=api opens its API page), as it does "__theme"
# and other names starting with "__"; a link leaves them alone
GRADIO_PARAMETERS = ("view", "deep_link", "ui")
PACKED = ".z"  # NAME.z: NAME's text, packed
PACK_FROM = 200  # characters: shorter texts stay plain in a packed link
MAX_UNPACKED_CHARS = 1_000_000  # a packed text unpacks to at most this (the tab's own limit refuses what it cannot run)

Value = str | int | float | bool


@dataclass(frozen=True)
class Field:
    """What one parameter accepts: a type, and a range or a list of choices."""

    type: type  # str, int, float or bool
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()  # empty: any text

    def read(self, name: str, text: str) -> Value:
        """The value ``text`` (as a URL carries it) stands for, or a ValueError that says what to write."""
        value = _parse(self.type, name, text)
        self.check(name, value)
        return value

    def check(self, name: str, value: Value) -> None:
        if self.choices and value not in self.choices:
            raise ValueError(f"link parameter {name!r} is {value!r}; it takes one of: {', '.join(map(repr, self.choices))}")
        if self.minimum is not None and value < self.minimum or self.maximum is not None and value > self.maximum:
            raise ValueError(f"link parameter {name!r} is {value!r}; it takes {_number(self.minimum)} to "
                             f"{_number(self.maximum)}")


def _number(bound: float | None) -> str:
    return "any" if bound is None else f"{bound:g}"


def _parse(kind: type, name: str, text: str) -> Value:
    if kind is str:
        return text
    if kind is bool:
        if text not in ("true", "false"):
            raise ValueError(f"link parameter {name!r} is {text!r}; write true or false")
        return text == "true"
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"link parameter {name!r} is {text!r}; write a {'whole ' if kind is int else ''}number") from None
    if not math.isfinite(value):
        raise ValueError(f"link parameter {name!r} is {text!r}; write a finite number")
    return value


def _write(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 1.0 and 1 are the same setting: one spelling, one link
    return str(value)


@dataclass(frozen=True)
class LinkSpec:
    """What links to one tab may hold: its main action's parameters and its views' controls."""

    tab: str  # the tab's id: "generation", "classification", "qa" or "tagging"
    inputs: dict[str, Field]  # the main action's parameters, model sources included, in its order
    controls: dict[str, Field]  # the views' controls (slot, layer, head, kind, size, …)


@dataclass
class ViewLink:
    """What a link reopens: the tab's run (its inputs) and a view of it (the view's controls).
    Absent inputs or controls keep the values the page starts with."""

    tab: str
    inputs: dict[str, Value] = field(default_factory=dict)
    controls: dict[str, Value] = field(default_factory=dict)
    show: str = VIEWS[0]

    def query(self, packed: bool = False) -> str:
        """The URL query (without "?"): tab, inputs, view, controls, in that order; ``packed``: inputs
        of ``PACK_FROM`` characters or more as ``NAME.z`` (``pack``)."""
        inputs = [(name + PACKED, pack(value)) if packed and isinstance(value, str) and len(value) >= PACK_FROM
                  else (name, value) for name, value in self.inputs.items()]
        pairs = [(TAB, self.tab), *inputs, (SHOW, self.show), *self.controls.items()]
        return urlencode([(name, _write(value)) for name, value in pairs])


def pack(text: str) -> str:
    """``text`` deflated and base64url-encoded (no padding): what a ``NAME.z`` parameter carries."""
    return base64.urlsafe_b64encode(zlib.compress(text.encode("utf-8"), 9)).decode("ascii").rstrip("=")


def unpack(name: str, packed: str) -> str:
    """The text a ``NAME.z`` parameter carries (``pack``), or a ValueError naming the parameter."""
    try:
        data = base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4))
        inflate = zlib.decompressobj()
        raw = inflate.decompress(data, 4 * MAX_UNPACKED_CHARS + 1)  # UTF-8: at most 4 bytes a character
        if len(raw) > 4 * MAX_UNPACKED_CHARS:
            raise ValueError(f"link parameter {name!r} unpacks to more than {MAX_UNPACKED_CHARS:,} characters")
        if not inflate.eof:
            raise zlib.error("the packed text ends early")  # a link cut short
        text = raw.decode("utf-8")
    except (binascii.Error, zlib.error, UnicodeDecodeError):
        raise ValueError(f"link parameter {name!r} is not a text this app packed (deflated, base64url); "
                         "copy the link again") from None
    if len(text) > MAX_UNPACKED_CHARS:
        raise ValueError(f"link parameter {name!r} unpacks to more than {MAX_UNPACKED_CHARS:,} characters")
    return text


def url(root: str, link: ViewLink) -> str:
    """The link to ``link`` on the app served at ``root`` (its address, without a trailing slash),
    or a ValueError when it would be too long for a URL."""
    address = f"{root}/?{link.query()}"
    if len(address) > MAX_LINK_CHARS:  # its long texts packed
        address = f"{root}/?{link.query(packed=True)}"
    if len(address) > MAX_LINK_CHARS:
        raise ValueError(f"a link to this view would be {len(address):,} characters long; links are limited to "
                         f"{MAX_LINK_CHARS:,} (longer URLs are refused on the way to the server). Shorten the input, "
                         "or reproduce the view through the API (README: Use it from Python)")
    return address


def read(pairs: Iterable[tuple[str, str]], specs: dict[str, LinkSpec]) -> ViewLink | None:
    """The link a page was opened with, from its URL's query parameters (name, value) in order; None
    when the page was opened without one. Every value is checked against ``specs[tab]``."""
    pairs = [(name, value) for name, value in pairs if name not in GRADIO_PARAMETERS and not name.startswith("__")]
    if not pairs:
        return None
    if sum(len(name) + len(value) + 2 for name, value in pairs) > MAX_LINK_CHARS:
        raise ValueError(f"this link is longer than {MAX_LINK_CHARS:,} characters, which links are limited to; "
                         "reproduce the view through the API (README: Use it from Python)")
    given: dict[str, str] = {}
    for name, value in pairs:
        if name.endswith(PACKED) and len(name) > len(PACKED):
            name, value = name[:-len(PACKED)], unpack(name, value)
        if name in given:
            raise ValueError(f"link parameter {name!r} is given twice; keep one")
        given[name] = value
    tab = given.pop(TAB, None)
    if tab not in specs:
        raise ValueError(f"a link names its tab as tab=…, one of {', '.join(specs)}" +
                         (f"; {tab!r} is none of them" if tab is not None else ""))
    show = given.pop(SHOW, VIEWS[0])
    if show not in VIEWS:
        raise ValueError(f"link parameter 'show' is {show!r}; it takes one of: {', '.join(VIEWS)}")
    spec, link = specs[tab], ViewLink(tab, show=show)
    for name, text in given.items():
        part = link.inputs if name in spec.inputs else link.controls if name in spec.controls else None
        if part is None:
            raise ValueError(f"a link to the {tab} tab takes no parameter {name!r}; it takes "
                             f"{', '.join([TAB, *spec.inputs, SHOW, *spec.controls])}")
        part[name] = (spec.inputs.get(name) or spec.controls[name]).read(name, text)
    return link
