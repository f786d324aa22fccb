"""Links to a view (``components.links``) and the provenance every export carries, without a model."""

import base64
import csv
import hashlib
import json
import zlib
from urllib.parse import parse_qsl, urlsplit

import gradio as gr
import pandas as pd
import pytest

from components import exports, figures, links
from components.panel import sharing
from diffllama import provenance
from test_ui_components import attention_map, fake_infos

SPEC = links.LinkSpec("qa", {"question": links.Field(str), "context": links.Field(str),
                             "top_k": links.Field(int, 1, 10), "greedy": links.Field(bool),
                             "measure_on": links.Field(str, choices=("gold answer", "A's prediction"))},
                      {"layer": links.Field(int, 0, 127), "kind": links.Field(str, choices=("diff", "softmax")),
                       "temperature": links.Field(float, 0.1, 2.0)})


def pairs(address: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(address).query, keep_blank_values=True)


def test_a_link_reads_back_as_the_same_view():
    link = links.ViewLink("qa", {"question": "Où est 李娜? a&b=c #1", "context": "", "top_k": 3, "greedy": False,
                                 "measure_on": "A's prediction"}, {"layer": 2, "kind": "diff", "temperature": 0.95}, "zoom")
    address = links.url("http://lens.example/app", link)
    assert address.startswith("http://lens.example/app/?tab=qa&question=")
    assert links.read(pairs(address), {"qa": SPEC}) == link
    # the same setting is spelt one way: a slider's 3.0 is the link's 3
    assert links.ViewLink("qa", {"top_k": 3.0}).query() == "tab=qa&top_k=3&show=maps"


def test_a_page_without_a_link_opens_as_usual_and_gradio_keeps_its_own_parameters():
    assert links.read([], {"qa": SPEC}) is None
    assert links.read([("view", "api"), ("__theme", "dark")], {"qa": SPEC}) is None
    assert links.read([("tab", "qa"), ("__theme", "dark")], {"qa": SPEC}) == links.ViewLink("qa")


@pytest.mark.parametrize("query, message", [
    ("tab=qa&layer=two", "'layer' is 'two'; write a whole number"),
    ("tab=qa&layer=1.5", "'layer' is '1.5'; write a whole number"),
    ("tab=qa&layer=200", "'layer' is 200; it takes 0 to 127"),
    ("tab=qa&temperature=nan", "write a finite number"),
    ("tab=qa&greedy=yes", "'greedy' is 'yes'; write true or false"),
    ("tab=qa&kind=banana", "'kind' is 'banana'; it takes one of: 'diff', 'softmax'"),
    ("tab=qa&layr=1", "takes no parameter 'layr'; it takes tab, question, context"),
    ("tab=qa&layer=1&layer=2", "'layer' is given twice"),
    ("tab=qa&show=everything", "'show' is 'everything'; it takes one of: maps, zoom, overview, compare"),
    ("layer=1", "a link names its tab as tab=…, one of qa"),
    ("tab=study", "'study' is none of them"),
    ("tab=qa&context=" + "x" * links.MAX_LINK_CHARS, "longer than 8,000 characters"),
])
def test_a_bad_link_is_refused_with_a_message_naming_the_parameter(query, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        links.read(parse_qsl(query, keep_blank_values=True), {"qa": SPEC})


def test_a_long_text_travels_packed_and_reads_back():
    context = " ".join(f"Filler sentence {i} about the weather in Lyon, and the number {i * 7919 % 10007}." for i in range(250))
    link = links.ViewLink("qa", {"question": "What is the number?", "context": context, "top_k": 3}, {"layer": 2})
    assert len(links.ViewLink("qa", {"context": context}).query()) > links.MAX_LINK_CHARS  # too long as plain text
    address = links.url("http://lens.example", link)
    assert len(address) <= links.MAX_LINK_CHARS and "context.z=" in address and "question=What" in address
    assert links.read(pairs(address), {"qa": SPEC}) == link
    short = links.url("http://lens.example", links.ViewLink("qa", {"context": "short " * 100}))
    assert "context=short" in short  # a link that fits stays plain


@pytest.mark.parametrize("packed, message", [
    ("not*base64", "'context.z' is not a text this app packed"),
    (links.pack("cut short " * 500)[:-20], "'context.z' is not a text this app packed"),
    (base64.urlsafe_b64encode(zlib.compress(b"\xff\xfe")).decode(), "'context.z' is not a text this app packed"),
    (links.pack("a" * (links.MAX_UNPACKED_CHARS + 1)), "unpacks to more than 1,000,000 characters"),
])
def test_a_bad_packed_text_is_refused_with_a_message(packed, message):
    with pytest.raises(ValueError, match=message):
        links.read([("tab", "qa"), ("context.z", packed)], {"qa": SPEC})
    with pytest.raises(ValueError, match="'context' is given twice"):
        links.read([("tab", "qa"), ("context", "x"), ("context.z", links.pack("y"))], {"qa": SPEC})


def test_a_link_too_long_for_a_url_is_refused_and_the_api_suggested():
    noise = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(3000))  # packs to no less than it is
    with pytest.raises(ValueError, match="limited to 8,000.*through the API"):
        links.url("http://h", links.ViewLink("qa", {"context": noise}))


def test_link_fields_are_read_from_the_controls():
    with gr.Blocks():
        slider, step = gr.Slider(1, 256, step=1), gr.Slider(0.1, 2.0, step=0.05)
        radio = gr.Radio(["A and B", "A"], value="A")
        slot = gr.Dropdown(["diffllama-lm"], allow_custom_value=True)
        fields = [sharing.link_field(c) for c in (slider, step, radio, slot, gr.Number(precision=0), gr.Checkbox(),
                                                          gr.Textbox())]
    assert fields == [links.Field(int, 1, 256), links.Field(float, 0.1, 2.0), links.Field(str, choices=("A and B", "A")),
                      links.Field(str), links.Field(int), links.Field(bool), links.Field(str)]


def test_a_links_layer_and_head_are_checked_against_the_models_it_loads(monkeypatch):
    fake_infos(monkeypatch, **{"diffllama-cls": (4, 4), "llama-cls": (4, 2)})
    link = links.ViewLink("classification", {"source_a": "diffllama-cls", "source_b": "llama-cls"}, {"layer": 50})
    with pytest.raises(ValueError, match=r"'layer' is 50; it takes 0 to 3 \(the link's models — A diffllama-cls: 4 layers"):
        sharing.check_against_models(link, {})
    link.controls = {"layer": 3, "head": 4}
    with pytest.raises(ValueError, match="'head' is 4; it takes 0 to 3"):
        sharing.check_against_models(link, {})
    link.controls = {"heat_layer": 9}  # the models by default when the link names none
    with pytest.raises(ValueError, match="'heat_layer' is 9"):
        sharing.check_against_models(links.ViewLink("classification", controls={"heat_layer": 9}),
                                     {"A": "diffllama-cls", "B": "llama-cls"})
    sharing.check_against_models(links.ViewLink("classification", {"source_a": "diffllama-cls"}, {"layer": 3, "head": 3}), {})


def test_a_compare_link_made_without_a_span_carries_none():
    spec = links.LinkSpec("classification", {"text": links.Field(str)},
                          {"slot": links.Field(str), "layer": links.Field(int, 0, 127), "span_text": links.Field(str)})
    make = sharing.link_maker(spec, {"compare": ("slot", "layer", "span_text")})
    for empty in (None, ""):
        address = make(None, "Bob", "A", 2, empty, "compare")
        assert "span_text" not in address and "None" not in address
        assert links.read(pairs(address), {"classification": spec}).controls == {"slot": "A", "layer": 2}
    assert "span_text=Bob" in make(None, "Bob", "A", 2, "Bob", "compare")


def record(**view) -> provenance.Provenance:
    return provenance.provenance({"A": "diffllama-cls", "B": "llama-cls"}, {"text": "Bob met Clara."},
                                 link="http://h/?tab=classification", **view)


def test_provenance_names_models_input_view_versions_time_and_link():
    stamp = record(layer=1, head=0, kind="diff")
    expected_hash = hashlib.sha256(json.dumps({"text": "Bob met Clara."}).encode()).hexdigest()[:16]
    assert stamp.input_sha256 == expected_hash != provenance.input_hash({"text": "Bob met Clara!"})
    assert set(stamp.versions) == {"torch", "transformers", "gradio", "plotly", "app"}
    assert stamp.versions["app"] and stamp.created.endswith("+00:00")
    assert record().lines()[:2] == ["models: A=diffllama-cls, B=llama-cls", f"input_sha256: {expected_hash}"]
    assert "layer: 1" in stamp.lines() and "kind: diff" in stamp.lines() and "link: http://h/?tab=classification" in stamp.lines()
    assert not any(line.startswith("layer") for line in record().lines())  # a view without layers names none


def test_a_stamped_figure_keeps_its_meta_and_shows_where_it_came_from():
    figure = figures.provenance_note(figures.attention_heatmap(attention_map("diff")), record(layer=1, head=0, kind="diff"))
    assert figure.layout.meta["row_edges"] == [0, 1, 2, 3, 4]  # the zoom button still reads the map's edges
    assert figure.layout.meta["provenance"]["link"] == "http://h/?tab=classification"
    footer = figure.layout.annotations[-1].text
    assert "A: diffllama-cls" in footer and "input sha256" in footer and "layer 1" in footer and "torch" in footer
    unstamped = figures.attention_heatmap(attention_map("diff")).layout.margin.b  # a map's stamp sits under its tick labels
    assert figure.layout.margin.b > unstamped and figures.provenance_note(None, record()) is None


def test_exports_lead_with_their_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr(exports, "EXPORTS", tmp_path)
    stamp = record(layer=1, head=0, kind="diff")
    path = exports.export_csv("map", ["model", "query", "value"], [["A", "3 #tag", 0.5], ["A", '4 "q",', -0.25]], stamp)
    table = pd.read_csv(path, comment="#")  # as the README says to read it
    assert list(table["query"]) == ["3 #tag", '4 "q",'] and list(table["value"]) == [0.5, -0.25]
    with open(path) as f:
        assert [line[2:].rstrip("\n") for line in f if line.startswith("# ")] == stamp.lines()
    with open(path) as f:
        assert sum(1 for row in csv.reader(f) if not row[0].startswith("#")) == 3
    data = json.loads(open(exports.export_json("numbers", {"values": [1]}, stamp)).read())
    assert list(data) == ["provenance", "values"] and data["provenance"]["input_sha256"] == stamp.input_sha256
