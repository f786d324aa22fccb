"""The edge of every callback: what a visitor is told when something goes wrong (a toast on the page,
plain text for API clients), and the per-request time limit every callback runs under."""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from urllib.parse import urlsplit

import gradio as gr
from gradio.context import LocalContext

from diffllama import limits

from .safe_text import for_html

log = logging.getLogger("diffllama_lens")


def message(error: Exception, where: str, *, html: bool = False) -> str:
    """What a visitor is told: a user error (the backend's ``ValueError``s) is its own message and one
    log line; anything else a message with a request id, logged with its traceback under that id.
    Messages quote what the visitor sent; ``html``: the text goes into the page as HTML (a toast), so
    it is escaped (``safe_text``) — API clients get it plain, as JSON."""
    if isinstance(error, ValueError):  # LoadError, RunMissing, TimeLimitError, bad values
        log.info("%s: %s", where, error)
        text = str(error)
    else:
        request_id = uuid.uuid4().hex[:8]
        log.error("unexpected error in %s, request %s", where, request_id, exc_info=error)
        text = (f"Something went wrong on the server (request {request_id}); the app keeps running. "
                "Try another input, and quote the request id if you report it.")
    return for_html(text) if html else text


def from_page() -> bool:
    """Whether the event running now came from gradio's page, which renders a toast's text as HTML.
    API clients get messages plain: gradio's clients say what they are (``x-gradio-user: api``, or
    ``mcp`` from its MCP server; the page sends no such header), REST calls use ``/call/``, MCP's
    direct calls ``/mcp``; a function called directly (a test) has no request."""
    request = LocalContext.request.get(None)
    if request is None:
        return False
    path = urlsplit(str(getattr(request, "url", ""))).path
    return "x-gradio-user" not in request.headers and "/call/" not in path and "/mcp" not in path


def user_errors(fn):
    """The edge of every callback: it runs under the per-request time limit, and what goes wrong
    reaches the visitor as a ``message``, never a stack trace — in the log too, a user error is one
    line (gradio would print each ``gr.Error``'s traceback)."""

    def translate(error: Exception):
        return gr.Error(message(error, fn.__name__, html=from_page()), print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            # gradio runs each step of a generator in its own worker call, so every step resumes the deadline
            with limits.time_limit():
                deadline, steps = limits.deadline(), fn(*args, **kwargs)
            while True:
                try:
                    with limits.until(deadline):
                        item = next(steps)
                except StopIteration:
                    return
                except gr.Error:
                    raise
                except Exception as error:  # noqa: BLE001 - the edge where errors become messages
                    raise translate(error) from None
                yield item
        return generator

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            with limits.time_limit():
                return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001
            raise translate(error) from None
    return plain

