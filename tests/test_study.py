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
from diffllama.study.measure import prompt
from diffllama.study.statistics import bootstrap

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


def test_study_equals_a_direct_loop(models, examples, result):
    for name, lens in models.items():
        summary = result["models"][name]
        logits, hidden, sinks = [], [], []
        for example, row in zip(examples, summary["per_example"]):
            trace = lens.trace(prompt(example))
            gold = diffllama.records.ReferenceSpan(example.answer_start, example.answer_end, 0, "gold answer")
            allocation = analysis.reference_allocation(trace, gold, (0, len(example.context)))
            for reading in analysis.READINGS:
                assert row["answer"][reading] == pytest.approx(allocation.means(reading)[0], abs=1e-9)
                assert row["noise"][reading] == pytest.approx(allocation.means(reading)[1], abs=1e-9)
            stream = lens.generate(prompt(example), max_new_tokens=8, greedy=True)
            list(stream)
            assert row["found"] == stream.result.text.strip().startswith(example.answer)
            assert row["tokens"] == trace.seq_len
            softmax_heads = list(range(2 * trace.num_heads if trace.lambdas else trace.num_heads))
            logits += [trace.logit_rows(layer, torch.arange(trace.seq_len), softmax_heads) for layer in range(trace.num_layers)]
            hidden += decoder_outputs(trace)
            sinks.append(analysis.sink_scores(trace))
        for reading in analysis.READINGS:
            overall = summary["allocation"][reading]["answer"]["overall"]
            assert overall["mean"] == pytest.approx(np.mean([r["answer"][reading] for r in summary["per_example"]]))
            assert overall["n"] == len(examples)
        logit_values = torch.cat([l[torch.isfinite(l)].abs() for l in logits])
        assert summary["outliers"]["attention_logits"]["top-1"] == pytest.approx(logit_values.max().item())
        assert summary["outliers"]["attention_logits"]["median"] == logit_values.median().item()
        assert summary["outliers"]["attention_logits"]["values"] == logit_values.numel()
        hidden_values = torch.cat([h.flatten() for h in hidden]).abs()
        assert summary["outliers"]["hidden_states"]["top-10"] == pytest.approx(hidden_values.sort(descending=True).values[9].item(), rel=1e-5)
        assert summary["outliers"]["hidden_states"]["median"] == pytest.approx(hidden_values.median().item(), rel=1e-5)
        assert list(summary["sinks"]) == list(sinks[0].scores)
        for kind, values in summary["sinks"].items():
            assert values["share"]["mean"] == pytest.approx(np.mean([s.share_above(kind) for s in sinks]))
            assert values["score"]["mean"] == pytest.approx(np.mean([s.scores[kind].mean() for s in sinks]))


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

    found = list(intervals(result))
    assert len(found) > 50
    assert all(ci["low"] - 1e-12 <= ci["mean"] <= ci["high"] + 1e-12 for ci in found)
    ci = bootstrap([0.0, 1.0, 1.0, 0.0, 1.0], resamples=500)
    assert ci["n"] == 5 and ci["mean"] == 0.6 and 0.0 <= ci["low"] < 0.6 < ci["high"] <= 1.0
    assert bootstrap([2.0], resamples=10) == {"mean": 2.0, "low": 2.0, "high": 2.0, "n": 1}


def test_markdown_is_laid_out_like_the_paper(result):
    text = report.markdown(result)
    for heading in ("Table 3: attention allocation by answer depth, absolute", "normalised reading", "signed reading",
                    "Table 3 by context length", "Table 3 per layer", "Table 5", "Attention sinks"):
        assert heading in text
    assert "| diff (diffllama, diff) | 0." in text and "answer ↑ @0.25" in text
    assert analysis.measures.MEASURES["absolute reading"].text in text


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
