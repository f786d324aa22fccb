"""Inputs nobody planned for: each gets a clear message (or a sane result), and the next request works."""

import json
import shutil
import urllib.request

import pytest
from gradio_client import Client

import diffllama

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
     "less than minimum value 0.1"),  # gradio validates slider ranges itself
]


@pytest.mark.parametrize("what, api_name, args, message", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_clear_messages(client, what, api_name, args, message):
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name=api_name)
    works(client)


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
