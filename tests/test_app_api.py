"""Every endpoint of the launched app, through gradio_client, returns what the backend returns."""

import base64
import json
import random
import string

import numpy as np
import pandas as pd
import pytest
from gradio_client import Client

from diffllama import analysis, provenance
from diffllama.registry import ModelCache

from components import panel

QUESTION = "What is the magic number of Lyon?"
CONTEXT = "The magic number of Paris is 4341. The magic number of Lyon is 6087. A bus passed by slowly."


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def backend(bundle):
    return ModelCache()


def test_classify_matches_the_backend(client, backend):
    label_a, label_b, records = client.predict("It was not bad at all.", "diffllama-cls", "llama-cls", api_name="/classify")
    expected = backend.get("diffllama-cls", "classification").classify("It was not bad at all.")
    assert label_a["label"] == expected.labels[0].label
    got = {c["label"]: c["confidence"] for c in label_a["confidences"]}
    assert got == pytest.approx({s.label: s.probability for s in expected.labels}, abs=1e-6)
    assert records["A"]["pooled_index"] == expected.pooled_index
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
    marked, table_a, _, _, _, allocation, records, *_ = client.predict(
        QUESTION, CONTEXT, 3, "diffllama-qa", "llama-qa", "6087", "gold answer", api_name="/answer")
    expected = backend.get("diffllama-qa", "qa").answer(QUESTION, CONTEXT, top_k=3)
    assert [row[0] for row in table_a["data"]] == [s.text for s in expected.spans]
    assert records["A"]["spans"][0]["start"] == expected.spans[0].start
    # measured on the gold answer from the query token: the backend's one table (a row for the mean over
    # layers and one per layer, λ and regime beside DiffLlama's, every reading), its notes as the label
    gold = analysis.find_reference(CONTEXT, "6087", 1, "gold answer")
    other = backend.get("llama-qa", "qa").answer(QUESTION, CONTEXT, top_k=3)
    table = analysis.allocation_table({"A (diffllama)": analysis.reference_allocation(expected.trace, gold),
                                       "B (llama)": analysis.reference_allocation(other.trace, gold)})
    assert allocation["label"] == panel.allocation_label(table) and "(gold answer)" in allocation["label"]
    assert allocation["value"]["headers"] == table.headers and allocation["value"]["data"] == table.rows
    assert "".join(p["token"] for p in marked) == CONTEXT  # the context once, both models' answers marked
    # without a gold answer nothing is measured unless a prediction is picked, and then it is labelled
    unmeasured = client.predict(QUESTION, CONTEXT, 3, "diffllama-qa", "llama-qa", "", "gold answer", api_name="/answer")[5]
    assert unmeasured["value"]["data"] in ([], [[]]) and "no reference span" in unmeasured["label"]
    missing = client.predict(QUESTION, CONTEXT, 3, "diffllama-qa", "llama-qa", "1111", "gold answer", api_name="/answer")[5]
    assert "'1111' does not occur in the context" in missing["label"]
    picked = client.predict(QUESTION, CONTEXT, 3, "diffllama-qa", "llama-qa", "", "B's prediction", api_name="/answer")[5]
    layers = expected.trace.num_layers
    assert len(picked["value"]["data"]) == 2 * (1 + layers) and "(B's prediction)" in picked["label"]


def test_tag_matches_the_backend(client, backend):
    text = "Anna works at Acme Corp in Lyon."
    entities_a, _, table, _, records, *_ = client.predict(text, "diffllama-tag", "llama-tag", api_name="/tag")
    expected = backend.get("diffllama-tag", "tagging").tag(text)
    assert [e["label"] for e in records["A"]["entities"]] == [e.label for e in expected.entities]
    assert [row[2] for row in table["value"]["data"]] == [t.label for t in expected.tokens] and "page 1 of 1" in table["label"]
    assert "".join(p["token"] for p in entities_a) == text


def test_attention_views_use_the_last_run_of_the_session(client):
    client.predict("Bob met Clara.", "diffllama-cls", "llama-cls", api_name="/classify")
    note, map_a, map_b, a1_a, a2_a, diff_a, *_, profile = client.predict("A", 1, 1, "diff", 64, api_name="/classify_attention")
    assert map_a and a1_a and a2_a and diff_a and profile and not map_b
    assert client.predict("A", 1, 1, "diff", 64, api_name="/classify_export").endswith(".csv")
    stats, allocation, sinks = client.predict("Clara", api_name="/classify_compare")
    assert client.predict("Clara", api_name="/classify_compare_export").endswith("comparison.json")
    outliers = client.predict(api_name="/classify_outliers")
    assert [row[1] for row in outliers["data"]] == ["attention logits", "hidden states"] * 2
    # the backend's table: per model a row for the mean over layers, then one per layer (3 layers), with λ and regime
    assert [row[:2] for row in allocation["value"]["data"]] == [[m, l] for m in ("A (diffllama)", "B (llama)") for l in ("all", 0, 1, 2)]
    assert allocation["value"]["headers"][5:7] == ["answer ↑ (net)", "noise ↓ (net)"]
    assert "span tokens 8..11 (marked span)" in allocation["label"]
    assert [row[1] for row in sinks["data"]] == ["diff", "a1", "a2", "softmax"]
    assert all(0 <= row[2] <= 1 for row in sinks["data"])
    plot, changed, summary, page = client.predict("A", 0.0, api_name="/classify_ablation")
    assert page == 1 and "page 1 of 1" in changed["label"]
    assert "P(" in summary and "→" in summary
    gallery_a, gallery_b, legend, note, *_ = client.predict("A", "a1", "sink mass", "measure, high first",
                                                            api_name="/classify_overview")
    assert gallery_a.count("<figure") == 3 * 4 and not gallery_b  # 3 layers × 4 differential heads of the tiny DiffLlama
    zoom_a, zoom_b, note, *ranges = client.predict("A and B", 1, 0, "diff", 2, 6, 0, 6, api_name="/classify_zoom")
    assert zoom_a and zoom_b and ranges == [2, 6, 0, 6]


def test_slot_b_shows_a_llama_with_its_softmax_maps(client, backend):
    client.predict("Bob met Clara.", "diffllama-cls", "llama-cls", api_name="/classify")
    note, map_a, map_b, *parts, profile = client.predict("B", 2, 3, "softmax", 512, api_name="/classify_attention")
    assert map_b and not map_a and not any(parts)
    figure = json.loads(map_b["plot"])
    trace = backend.get("llama-cls", "classification").trace("Bob met Clara.")
    expected = analysis.attention_map(trace, 2, 3, "softmax", 512).values
    drawn = np.nan_to_num(decode(figure["data"][0]["z"]), nan=0.0)  # masked future cells are NaN (drawn grey)
    np.testing.assert_allclose(drawn, expected, atol=1e-6)
    assert client.predict("B", "softmax", "entropy", "layer × head", api_name="/classify_overview")[1]
    # side by side, a kind the other model lacks is matched to its own (diff ↔ softmax)
    note, map_a, map_b, *_ = client.predict("A and B", 1, 0, "softmax", 64, api_name="/classify_attention")
    assert map_a and map_b and "showing its 'diff' map" in note


@pytest.mark.parametrize("value", ["norm", "projection"])
def test_contribution_cells_through_the_app_equal_the_backend(client, backend, value):
    """The weight | contribution toggle: map view, zoom and overview draw the trace's contributions."""
    client.predict("Bob met Clara.", "diffllama-cls", "llama-cls", api_name="/classify")
    note, map_a, map_b, a1_a, a2_a, diff_a, *_ = client.predict("A and B", 1, 1, "a1", 512, value, api_name="/classify_attention")
    assert "contributions come from 'diff'" in note and "Kobayashi" in note
    for slot, source, kind, plot in (("A", "diffllama-cls", "diff", map_a), ("B", "llama-cls", "softmax", map_b)):
        trace = backend.get(source, "classification").trace("Bob met Clara.")
        figure = json.loads(plot["plot"])
        expected = analysis.attention_map(trace, 1, 1, kind, 512, value).values
        np.testing.assert_allclose(np.nan_to_num(decode(figure["data"][0]["z"]), nan=0.0), expected, atol=1e-5)
        assert figure["data"][0]["colorbar"]["title"]["text"] == {"norm": "‖c‖", "projection": "c · o / ‖o‖"}[value]
        assert (figure["data"][0]["zmin"] < 0) == (value == "projection")  # along the output: diverging at 0
    assert json.loads(a1_a["plot"])["data"][0]["colorbar"]["title"]["text"] == "attention"  # the decomposition: weights
    zoom_a, *_ = client.predict("A", 1, 1, "diff", 0, 4, 0, 4, value, api_name="/classify_zoom")
    assert "through" in json.loads(zoom_a["plot"])["layout"]["title"]["text"]
    gallery_a, _, legend, note, *_ = client.predict("A", "diff", "entropy", "layer × head", value, api_name="/classify_overview")
    assert gallery_a.count("<figure") == 3 * 4 and "contribution" in legend and "contribution" in note


def decode(array: dict) -> np.ndarray:
    """A plotly typed array (base64 'bdata') as numpy."""
    shape = [int(n) for n in str(array["shape"]).split(",")]
    return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).reshape(shape)


def test_stateless_endpoints_equal_the_backend(app_url, backend):
    fresh = Client(app_url, verbose=False)  # no run in this session
    result = fresh.predict("What is the magic number?", "The magic number of Lyon is 4821.", "diffllama-qa", "qa",
                           1, 1, "a2", 512, api_name="/attention_map")
    trace = backend.get("diffllama-qa", "qa").trace("What is the magic number?", "The magic number of Lyon is 4821.")
    expected = analysis.attention_map(trace, 1, 1, "a2", 512)
    np.testing.assert_allclose(np.array(result["values"]), expected.values, atol=1e-6)
    assert result["labels"] == expected.labels and result["edges"] == expected.edges and result["kind"] == "a2"
    region = fresh.predict("Anna walked to the old market in Paris.", "", "llama-lm", "generation", 2, 0, "softmax",
                           3, 9, 1, 5, api_name="/attention_region")
    trace = backend.get("llama-lm", "generation").trace("Anna walked to the old market in Paris.")
    np.testing.assert_allclose(np.array(region["values"]), trace.attention(2, 0, "softmax")[3:9, 1:5].numpy(), atol=1e-6)
    assert region["rows"] == [3, 9] and len(region["col_labels"]) == 4
    contributions = trace.contributions(2, 0, rows=range(3, 9))  # the toggle's values, statelessly too
    region = fresh.predict("Anna walked to the old market in Paris.", "", "llama-lm", "generation", 2, 0, "softmax",
                           3, 9, 1, 5, "projection", api_name="/attention_region")
    np.testing.assert_allclose(np.array(region["values"]), contributions.projections[:, 1:5], atol=1e-5)
    whole = fresh.predict("Anna walked to the old market in Paris.", "", "llama-lm", "generation", 2, 0, "softmax",
                          512, "norm", api_name="/attention_map")
    np.testing.assert_allclose(np.array(whole["values"])[3:9], contributions.norms, atol=1e-5)
    assert whole["value"] == "norm"
    with pytest.raises(Exception, match="not available for llama"):
        fresh.predict("Bob", "", "llama-lm", "generation", 0, 0, "diff", 64, api_name="/attention_map")


def test_errors_come_back_as_messages_and_the_app_keeps_serving(client):
    with pytest.raises(Exception, match="the text is empty"):
        client.predict("   ", "diffllama-cls", "llama-cls", api_name="/classify")
    with pytest.raises(Exception, match="layer 9 is out of range"):
        client.predict("Bob met Clara.", "diffllama-cls", "llama-cls", api_name="/classify")
        client.predict("A", 9, 0, "diff", 64, api_name="/classify_attention")
    with pytest.raises(Exception, match="'/no/such/model' is not a model this server loads"):
        client.predict("Bob met Clara.", "/no/such/model", "llama-cls", api_name="/classify")
    assert client.predict("Bob met Clara.", "diffllama-cls", "llama-cls", api_name="/classify")[0]["label"]


def test_study_matches_the_backend(client, backend):
    from diffllama.study import retrieval_examples, run_study

    tables, figure, numbers = client.predict(["diffllama-lm", "llama-lm"], 3, 2, "1, 2", 5, api_name="/study")
    with open(numbers) as f:
        got = json.load(f)
    assert got.pop("provenance")["models"] == {"model 1": "diffllama-lm", "model 2": "llama-lm"}
    models = {name: backend.get(name, "generation") for name in ("diffllama-lm", "llama-lm")}
    expected = run_study(models, retrieval_examples(3, 2, (1, 2), seed=5))
    assert got == json.loads(json.dumps(expected))
    assert "Table 3: attention allocation by answer depth" in tables and "Table 5" in tables and figure
    with pytest.raises(Exception, match="fillers: 'four' is not allowed; give a whole number from 0 to 245"):
        client.predict(["llama-lm"], 3, 2, "four", 0, api_name="/study")


def test_a_link_to_a_view_gives_the_same_numbers(client, app_url):
    text = "Bob met Clara near the old bridge."
    link = client.predict(text, "diffllama-cls", "llama-cls", "A and B", 1, 2, "diff", 64, "projection", 2, 6, 0, 6, "entropy",
                          "layer × head", "", -1, 1, -1, True, "weight", "zoom", api_name="/classify_link")
    assert link.startswith(app_url) and "tab=classification" in link
    view = client.predict(link, api_name="/read_link")
    inputs, controls = view["inputs"], view["controls"]
    assert view["tab"] == "classification" and view["show"] == "zoom"
    assert inputs == {"text": text, "source_a": "diffllama-cls", "source_b": "llama-cls"}
    assert controls == {"slot": "A and B", "layer": 1, "head": 2, "kind": "diff", "size": 64, "value": "projection",
                        "query_from": 2, "query_to": 6, "key_from": 0, "key_to": 6, "heat_layer": 1, "heat_query": -1,
                        "heat_shared": True, "heat_value": "weight"}
    # the link's values give the numbers the inputs give
    direct = client.predict(text, "", "diffllama-cls", "classification", 1, 2, "diff", 64, "projection", api_name="/attention_map")
    linked = client.predict(inputs["text"], "", inputs["source_a"], "classification", controls["layer"], controls["head"],
                            controls["kind"], controls["size"], controls["value"], api_name="/attention_map")
    assert linked["values"] == direct["values"] and linked["labels"] == direct["labels"]
    # and so do the tab and the view the link opens (as a browser opening it runs them)
    client.predict(*inputs.values(), api_name="/classify")
    names = ("slot", "layer", "head", "kind", "query_from", "query_to", "key_from", "key_to", "value")
    zoom_a, *_ = client.predict(*(controls[n] for n in names), api_name="/classify_zoom")
    region = client.predict(text, "", "diffllama-cls", "classification", 1, 2, "diff", 2, 6, 0, 6, "projection",
                            api_name="/attention_region")
    drawn = np.nan_to_num(decode(json.loads(zoom_a["plot"])["data"][0]["z"]), nan=0.0)
    np.testing.assert_allclose(drawn, np.array(region["values"]), atol=1e-6)


def test_a_bad_link_gets_a_message_and_the_app_keeps_serving(client):
    with pytest.raises(Exception, match="link parameter 'layer' is 'abc'; write a whole number"):
        client.predict("?tab=classification&text=Bob&layer=abc", api_name="/read_link")
    with pytest.raises(Exception, match="takes no parameter 'prompt'"):
        client.predict("?tab=classification&prompt=Bob", api_name="/read_link")
    # checked against the link's models (3 layers), not the sliders' placeholder range
    with pytest.raises(Exception, match=r"link parameter 'layer' is 50; it takes 0 to 2 \(the link's models — A diffllama-cls: 3"):
        client.predict("?tab=classification&text=Bob&layer=50", api_name="/read_link")
    with pytest.raises(Exception, match="layer is 500; it takes a whole number from 0 to 127"):
        client.predict("Bob", "diffllama-cls", "llama-cls", "A", 500, 0, "diff", 64, "weight", 0, 48, 0, 48, "entropy",
                       "layer × head", "", -1, 1, -1, True, "weight", "maps", api_name="/classify_link")
    with pytest.raises(Exception, match="show is 'everything'; it takes one of: 'maps', 'zoom', 'overview', 'compare'"):
        client.predict("Bob", "diffllama-cls", "llama-cls", "A", 1, 0, "diff", 64, "weight", 0, 48, 0, 48, "entropy",
                       "layer × head", "", -1, 1, -1, True, "weight", "everything", api_name="/classify_link")
    # a text that no packing brings under a link's length (repetitive texts travel packed: test_links)
    unpackable = "".join(random.Random(0).choices(string.ascii_letters + " ", k=12_000))
    with pytest.raises(Exception, match="limited to 8,000"):
        client.predict(unpackable, "diffllama-cls", "llama-cls", "A", 1, 0, "diff", 64, "weight", 0, 48, 0, 48, "entropy",
                       "layer × head", "", -1, 1, -1, True, "weight", "maps", api_name="/classify_link")
    assert client.predict("Bob met Clara.", "diffllama-cls", "llama-cls", api_name="/classify")[0]["label"]


def test_every_export_names_models_input_view_versions_and_its_link(client):
    text = "Bob met Clara."
    client.predict(text, "diffllama-cls", "llama-cls", api_name="/classify")
    path = client.predict("A", 1, 1, "diff", 64, "norm", api_name="/classify_export")
    with open(path) as f:
        fields = dict(line[2:].rstrip("\n").split(": ", 1) for line in f if line.startswith("# "))
    assert fields["models"] == "A=diffllama-cls, B=llama-cls" and fields["input_sha256"] == provenance.input_hash({"text": text})
    assert (fields["layer"], fields["head"], fields["kind"]) == ("1", "1", "diff")
    assert all(name in fields["versions"] for name in ("torch", "transformers", "gradio", "plotly", "app"))
    reopened = client.predict(fields["link"], api_name="/read_link")
    assert reopened["inputs"] == {"text": text, "source_a": "diffllama-cls", "source_b": "llama-cls"}
    assert reopened["controls"] == {"slot": "A", "layer": 1, "head": 1, "kind": "diff", "size": 64, "value": "norm"}
    assert list(pd.read_csv(path, comment="#").columns) == ["model", "map", "cell value", "query", "key", "value"]
    # JSON: a top-level provenance object; its link opens the comparison with the same span
    with open(client.predict("Clara", api_name="/classify_compare_export")) as f:
        stamp = json.load(f)["provenance"]
    assert stamp["models"] == {"A": "diffllama-cls", "B": "llama-cls"} and stamp["layer"] is None
    assert client.predict(stamp["link"], api_name="/read_link")["controls"] == {"span_text": "Clara", "query": -1}
    # PNG: the figures plotly's camera saves carry it as a footer, and whole in their meta
    _, map_a, *_ = client.predict("A", 1, 1, "diff", 64, "norm", api_name="/classify_attention")
    layout = json.loads(map_a["plot"])["layout"]
    assert layout["meta"]["provenance"]["link"] == fields["link"]
    assert any(fields["input_sha256"] in note["text"] for note in layout["annotations"])


def test_comparison_is_computed_once_per_run_and_equals_the_backend(client, backend, monkeypatch):
    from diffllama.analysis import derived

    computed, outlier_passes = [], []
    head_stats, activation_outliers = derived.head_stats, derived.activation_outliers
    monkeypatch.setattr(derived, "head_stats", lambda trace, *args, **kwargs: computed.append(trace.arch)
                        or head_stats(trace, *args, **kwargs))
    monkeypatch.setattr(derived, "activation_outliers", lambda trace: outlier_passes.append(trace.arch)
                        or activation_outliers(trace))
    text = "Clara said the film was not bad at all."
    client.predict(text, "diffllama-cls", "llama-cls", api_name="/classify")
    _, _, sinks = client.predict("Clara", api_name="/classify_compare")
    assert sorted(computed) == ["diffllama", "llama"] and not outlier_passes  # A and B; the outliers wait for their button
    outliers = client.predict(api_name="/classify_outliers")
    client.predict("film", api_name="/classify_compare")  # another span: only the allocation changes
    client.predict("film", api_name="/classify_compare_export")
    assert sorted(computed) == ["diffllama", "llama"] and sorted(outlier_passes) == ["diffllama", "llama"]
    trace = backend.get("diffllama-cls", "classification").classify(text).trace
    expected_sinks = analysis.sink_scores(trace)  # the one pass gives what the sink pass alone gives
    assert sinks["data"][0][2:] == [round(expected_sinks.share_above("diff"), 4), round(float(expected_sinks.scores["diff"].mean()), 4),
                                    round(float(expected_sinks.scores["diff"].max()), 4)]
    expected = analysis.activation_outliers(trace)
    assert outliers["data"][0][2:] == [round(expected.attention_logits[k], 3) for k in ("top-1", "top-2", "top-3", "top-10", "top-100", "median")]
    assert outliers["data"][1][2:] == [round(expected.hidden_states[k], 3) for k in ("top-1", "top-2", "top-3", "top-10", "top-100", "median")]
