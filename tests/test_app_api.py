"""Every endpoint of the launched app, through gradio_client, returns what the backend returns."""

import pytest
from gradio_client import Client

from diffllama.registry import ModelCache

QUESTION = "What is the magic number of Lyon?"
CONTEXT = "The magic number of Paris is 4341. The magic number of Lyon is 6087. A bus passed by slowly."


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def backend(bundle):
    return ModelCache()


def test_classify_matches_the_backend(client, backend):
    label_a, label_b, heat_a, _, records, *_ = client.predict("It was not bad at all.", "diffllama-cls", "llama-cls",
                                                              api_name="/classify")
    expected = backend.get("diffllama-cls", "classification").classify("It was not bad at all.")
    assert label_a["label"] == expected.labels[0].label
    got = {c["label"]: c["confidence"] for c in label_a["confidences"]}
    assert got == pytest.approx({s.label: s.probability for s in expected.labels}, abs=1e-6)
    assert records["A"]["pooled_index"] == expected.pooled_index
    assert "".join(piece["token"] for piece in heat_a) == "It was not bad at all."
    llama = backend.get("llama-cls", "classification").classify("It was not bad at all.")
    assert records["B"]["labels"][0]["probability"] == pytest.approx(llama.labels[0].probability, abs=1e-6)


def test_generate_streams_and_matches_greedy_backend(client, backend):
    job = client.submit("Anna walked to", 6, True, 0.8, 0.95, 0, "diffllama-lm", "llama-lm", api_name="/generate")
    final = job.result()
    stream = backend.get("diffllama-lm", "generation").generate("Anna walked to", max_new_tokens=6, greedy=True)
    list(stream)
    assert final[0] == stream.result.text
    assert final[2]["A"]["token_ids"] == stream.result.token_ids
    assert len(job.outputs()) > 1  # streamed: several partial outputs before the last


def test_answer_matches_the_backend(client, backend):
    marked_a, _, table_a, _, _, _, allocation, records, *_ = client.predict(
        QUESTION, CONTEXT, 3, "diffllama-qa", "llama-qa", api_name="/answer")
    expected = backend.get("diffllama-qa", "qa").answer(QUESTION, CONTEXT, top_k=3)
    assert [row[0] for row in table_a["data"]] == [s.text for s in expected.spans]
    assert records["A"]["spans"][0]["start"] == expected.spans[0].start
    assert [row[0] for row in allocation["data"]] == ["A (diffllama)", "B (llama)"]
    assert "".join(p["token"] for p in marked_a) == CONTEXT


def test_tag_matches_the_backend(client, backend):
    text = "Anna works at Acme Corp in Lyon."
    entities_a, _, table, _, records, *_ = client.predict(text, "diffllama-tag", "llama-tag", api_name="/tag")
    expected = backend.get("diffllama-tag", "tagging").tag(text)
    assert [e["label"] for e in records["A"]["entities"]] == [e.label for e in expected.entities]
    assert [row[1] for row in table["data"]] == [t.label for t in expected.tokens]
    assert "".join(p["token"] for p in entities_a) == text


def test_attention_views_use_the_last_run_of_the_session(client):
    client.predict("Bob met Clara.", "diffllama-cls", "llama-cls", api_name="/classify")
    heatmap, decomposition, profile, csv, note = client.predict("A", 1, 1, "diff", 64, api_name="/classify_attention")
    assert heatmap and decomposition and profile and csv.endswith(".csv")
    stats, allocation, outliers, exported = client.predict("Clara", api_name="/classify_compare")
    assert [row[1] for row in outliers["data"]] == ["attention logits", "hidden states"] * 2
    assert len(allocation["data"]) == 2
    plot, changed, summary = client.predict(0.0, api_name="/classify_ablation")
    assert "predictions change" in summary
    assert client.predict("A", "a1", api_name="/classify_overview")


def test_errors_come_back_as_messages_and_the_app_keeps_serving(client):
    with pytest.raises(Exception, match="the text is empty"):
        client.predict("   ", "diffllama-cls", "llama-cls", api_name="/classify")
    with pytest.raises(Exception, match="layer 9 is out of range"):
        client.predict("Bob met Clara.", "diffllama-cls", "llama-cls", api_name="/classify")
        client.predict("A", 9, 0, "diff", 64, api_name="/classify_attention")
    with pytest.raises(Exception, match="'/no/such/model' is not a model this server loads"):
        client.predict("Bob met Clara.", "/no/such/model", "llama-cls", api_name="/classify")
    assert client.predict("Bob met Clara.", "diffllama-cls", "llama-cls", api_name="/classify")[0]["label"]
