"""Studies: numbers equal a direct loop over the examples, CIs cover their means, and a 2-process
``accelerate launch`` gives the 1-process result."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import diffllama
from diffllama import analysis
from diffllama.study import read_jsonl, report, retrieval_examples, run_study
from diffllama.study.measure import prompt, retrieved
from diffllama.study.statistics import bootstrap, paired, wilson

from test_analysis import decoder_outputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def examples():
    return retrieval_examples(7, needles=2, fillers=(3, 1), seed=3, lookalikes=0)


@pytest.fixture(scope="module")
def models(checkpoint):
    return {"diff": diffllama.load(checkpoint("diffllama-gqa")), "llama": diffllama.load(checkpoint("llama-gqa"))}


@pytest.fixture(scope="module")
def result(models, examples):
    return run_study(models, examples, resamples=200)


def test_generated_examples_hold_the_answer_at_the_asked_depth(examples):
    assert [e.depth for e in examples] == [0.0, 0.25, 0.5, 0.75, 1.0, 0.0, 0.0]  # 5 sentences, then 3 (0.25 rounds to 0)
    for example in examples:
        fact = example.context[example.context.rfind(".", 0, example.answer_start) + 1:example.answer_end].split()
        assert example.answer.isdigit() and fact[:4] == ["The", "magic", "number", "of"] and fact[4] in example.question


def _layer_mean(values: np.ndarray):
    return None if np.isnan(values).any() else float(values.mean())


def test_study_equals_a_direct_loop(models, examples, result):
    for name, lens in models.items():
        summary = result["models"][name]
        logits, hidden, sinks = [], [], []
        for example, row in zip(examples, summary["per_example"]):
            trace = lens.trace(prompt(example))
            gold = diffllama.records.ReferenceSpan(example.answer_start, example.answer_end, 0, "gold answer")
            allocation = analysis.reference_allocation(trace, gold, (0, len(example.context)))
            assert row["query"] == allocation.query == trace.seq_len - 1  # the last prompt token
            for reading in analysis.READINGS:
                for which, mass in (("answer", allocation.answer_mass), ("noise", allocation.noise_mass)):
                    expected = _layer_mean(mass[reading].mean(axis=1))
                    assert row[which][reading] == (None if expected is None else pytest.approx(expected, abs=1e-9))
            stream = lens.generate(prompt(example), max_new_tokens=8, greedy=True)
            list(stream)
            assert row["found"] == retrieved(stream.result.text, example.answer)
            assert row["tokens"] == trace.seq_len
            softmax_heads = list(range(2 * trace.num_heads if trace.lambdas else trace.num_heads))
            logits += [trace.logit_rows(layer, torch.arange(trace.seq_len), softmax_heads) for layer in range(trace.num_layers)]
            hidden += decoder_outputs(trace)
            sinks.append(analysis.sink_scores(trace))
        for reading in analysis.READINGS:
            overall = summary["allocation"][reading]["answer"]["overall"]
            values = [r["answer"][reading] for r in summary["per_example"]]
            assert overall["mean"] == (None if None in values else pytest.approx(np.mean(values)))
            assert overall["n"] == len(examples)
            by_depth = summary["allocation"][reading]["answer"]["by_depth"]
            assert sum(cell["n"] for cell in by_depth.values()) == len(examples)  # n per cell as counted
            assert by_depth["0"]["n"] == 3 and by_depth["0.25"]["n"] == 1 and by_depth["0"]["few"]
        found = summary["found_answer"]["overall"]
        assert found == wilson(sum(r["found"] for r in summary["per_example"]), len(examples))
        logit_values = torch.cat([l[torch.isfinite(l)].abs() for l in logits])
        assert summary["outliers"]["attention_logits"]["top-1"] == pytest.approx(logit_values.max().item())
        assert summary["outliers"]["attention_logits"]["median"] == logit_values.median().item()
        assert summary["outliers"]["attention_logits"]["values"] == logit_values.numel()
        hidden_values = torch.cat([h.flatten() for h in hidden]).abs()
        assert summary["outliers"]["hidden_states"]["top-10"] == pytest.approx(hidden_values.sort(descending=True).values[9].item(), rel=1e-5)
        assert summary["outliers"]["hidden_states"]["median"] == pytest.approx(hidden_values.median().item(), rel=1e-5)
        assert list(summary["sinks"]) == list(sinks[0].scores)
        for kind, values in summary["sinks"].items():
            assert values["window"] == sorted({s.window for s in sinks})
            assert values["share"]["mean"] == pytest.approx(np.mean([s.share_above(kind) for s in sinks]))
            assert values["score"]["mean"] == pytest.approx(np.mean([s.scores[kind].mean() for s in sinks]))
            assert values["by_layer"][1]["score"]["mean"] == pytest.approx(np.mean([s.scores[kind][1].mean() for s in sinks]))
        if lens.arch == "diffllama":
            assert [e["lambda"] for e in summary["lambdas"]] == pytest.approx(trace.lambdas)
            assert [e["regime"] for e in summary["lambdas"]] == [analysis.measures.regime(v) for v in trace.lambdas]


def test_paired_differences_are_per_input_on_the_same_inputs(result):
    a, b = (result["models"][name]["per_example"] for name in ("diff", "llama"))
    compared = result["paired"]["diff − llama"]
    for reading in ("net", "contribution"):
        expected = paired([x["answer"][reading] for x in a], [y["answer"][reading] for y in b], resamples=200)
        assert compared["allocation"][reading]["answer"]["overall"] == expected
        first = [(x, y) for x, y in zip(a, b) if x["depth"] == 0.0]
        expected = paired([x["noise"][reading] for x, _ in first], [y["noise"][reading] for _, y in first], resamples=200)
        assert compared["allocation"][reading]["noise"]["by_depth"]["0"] == expected
    assert compared["found_answer"]["overall"]["mean"] == pytest.approx(np.mean([x["found"] - y["found"] for x, y in zip(a, b)]))
    assert len(compared["allocation"]["net"]["answer"]["by_layer"]) == 3


def test_confidence_intervals_cover_their_means(result):
    def intervals(node):
        if isinstance(node, dict) and "low" in node:
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from intervals(value)
        elif isinstance(node, list):
            for value in node:
                yield from intervals(value)

    found = [ci for ci in intervals(result) if ci["mean"] is not None]
    assert len(found) > 50
    assert all(ci["low"] - 1e-12 <= ci["mean"] <= ci["high"] + 1e-12 for ci in found)
    ci = bootstrap([0.0, 1.0, 1.0, 0.0, 1.0], resamples=500)
    assert ci["n"] == 5 and ci["mean"] == 0.6 and 0.0 <= ci["low"] < 0.6 < ci["high"] <= 1.0 and ci["few"]
    assert bootstrap([2.0], resamples=10) == {"mean": 2.0, "low": 2.0, "high": 2.0, "n": 1, "few": True}


def test_markdown_is_laid_out_like_the_paper(result):
    text = report.markdown(result)
    for heading in ("Table 3: attention allocation by answer depth, net reading (the default)", "normalised reading",
                    "signed reading", "contribution reading", "projection reading", "Table 3 by context length",
                    "Table 3 per layer, net reading (mean over heads, λ beside)", "Paired differences A − B",
                    "Table 5", "Attention sinks", "λ per layer"):
        assert heading in text
    assert "| diff (diffllama, diff) | " in text and "answer ↑ @0.25 (n=1)" in text and "| diff − llama | found answer |" in text
    assert "†" in text  # cells over fewer than 10 inputs are flagged
    assert analysis.measures.MEASURES["net reading"].text in text


def test_jsonl_examples(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"context": "Anna lives in Lyon. Bob lives in Oslo.", "question": "Where does Bob live?",
                                "answer": "Oslo"}) + "\n\n")
    [example] = read_jsonl(path)
    assert example.answer == "Oslo" and example.depth == pytest.approx(33 / 34)
    path.write_text(json.dumps({"context": "Anna lives in Lyon.", "question": "Where?", "answer": "Rome"}) + "\n")
    with pytest.raises(ValueError, match="line 1: the answer 'Rome' does not occur"):
        read_jsonl(path)


def test_two_processes_under_accelerate_equal_one(checkpoint, tmp_path):
    model = str(checkpoint("diffllama-gqa"))
    common = [model, "--examples", "5", "--needles", "2", "--fillers", "1", "3", "--resamples", "100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # same arithmetic in every process
    one = subprocess.run([sys.executable, "-m", "diffllama.study", *common, "--out", str(tmp_path / "one")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          "-m", "diffllama.study", *common, "--out", str(tmp_path / "two")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert (one.pop("processes"), two.pop("processes")) == (1, 2)
    for result in (one, two):
        result["command"].pop("out")
        assert result["provenance"]["models"] == {"model 1": model} and "torch" in result["provenance"]["versions"]
        result["provenance"].pop("created")
    assert one == two
    assert (tmp_path / "two.md").read_text() == (tmp_path / "one.md").read_text()


@pytest.mark.parametrize("arguments, message", [
    ((["llama-lm"], 61, 4, "28", 0), "inputs: 61 is not allowed; give a whole number from 1 to 60"),
    ((["llama-lm"], 5, 9, "28", 0), "needles: 9 is not allowed; give a whole number from 1 to 8"),
    ((["llama-lm"], 5, 4, "100000", 0), "fillers: '100000' is not allowed; give a whole number from 0 to 245"),
    ((["llama-lm"], 5, 4, "1 2 3 4 5", 0), "lengths: 5 is not allowed; give a whole number from 1 to 4"),
    ((["llama-lm"], 5, 4, "", 0), "fillers: give one or more whole numbers from 0 to 245"),
    ((["llama-lm"], 5, 4, "28", None), "seed: None is not allowed"),
    ((["llama-lm"], None, 4, "28", 0), "inputs: None is not allowed"),
    ((["a", "b", "c", "d"], 5, 4, "28", 0), "models: pick 1 to 3 language models"),
])
def test_the_study_tab_refuses_what_is_out_of_bounds_with_a_message(arguments, message):
    import gradio as gr

    from components import study_tab

    with pytest.raises(gr.Error, match=message):
        study_tab.study(*arguments)


def test_the_study_tab_runs_in_its_own_lane():
    """Studies never take the model queue's slots: their own concurrency group, one study at a time."""
    import gradio as gr

    from components import model_queue, study_tab

    with gr.Blocks() as demo:
        study_tab.build()
    [event] = [fn for fn in demo.fns.values() if fn.api_name == "study"]
    assert event.concurrency_id == study_tab.STUDY_QUEUE != model_queue.MODEL_QUEUE and event.concurrency_limit == 1


def test_a_study_measures_from_a_chosen_query_token(models, examples):
    lens = models["diff"]
    chosen = run_study({"diff": lens}, examples[:2], resamples=50, outliers=False, query=-2)
    summary = chosen["models"]["diff"]
    assert summary["query"] == "chosen: position -2 counted from the end" and summary["outliers"] is None
    for example, row in zip(examples[:2], summary["per_example"]):
        trace = lens.trace(prompt(example))
        gold = diffllama.records.ReferenceSpan(example.answer_start, example.answer_end, 0, "gold answer")
        expected = analysis.reference_allocation(trace, gold, (0, len(example.context)), query=trace.seq_len - 2)
        assert row["query"] == trace.seq_len - 2
        assert row["answer"]["net"] == pytest.approx(float(expected.answer_mass["net"].mean()), abs=1e-9)
    with pytest.raises(ValueError, match="query: 5000 is no token of an input"):
        run_study({"diff": lens}, examples[:1], resamples=10, outliers=False, query=5000)
