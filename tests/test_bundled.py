"""The bundled family loads through diffllama.load and beats trivial baselines on held-out data."""

from pathlib import Path

import pytest

import diffllama
from diffllama import corpus, evaluation
from diffllama.registry import bundled_models
from diffllama.training import corpus_texts

MODELS = Path(__file__).resolve().parents[1] / "assets" / "models"
HELD_OUT = corpus.HELD_OUT_SEED


def bundled(name):
    path = MODELS / name
    assert (path / "config.json").exists() and (path / "model.safetensors").exists() and (path / "README.md").exists(), \
        f"{name} is missing: run python -m diffllama.training"
    return diffllama.load(path)


@pytest.mark.parametrize("arch", ["diffllama", "llama", "persimmon"])
def test_language_models_beat_the_uniform_perplexity(arch):
    lens = bundled(f"{arch}-lm")
    assert lens.arch == arch and lens.task == "generation"
    ppl = evaluation.perplexity(lens, corpus_texts(HELD_OUT, stories=40, retrievals=20))
    assert ppl < len(lens.tokenizer) / 50  # uniform guessing scores the vocabulary size


@pytest.mark.parametrize("arch", ["diffllama", "llama", "persimmon"])
def test_classifiers_beat_the_majority_class(arch):
    scores = evaluation.classification_scores(bundled(f"{arch}-cls"), corpus.generate("review", HELD_OUT, 60))
    assert scores["accuracy"] > scores["majority_baseline"] + 0.1


@pytest.mark.parametrize("arch", ["diffllama", "llama", "persimmon"])
def test_taggers_are_well_above_chance(arch):
    assert evaluation.entity_f1(bundled(f"{arch}-tag"), corpus.generate("tagged", HELD_OUT, 30))["entity_f1"] > 0.5


@pytest.mark.parametrize("arch", ["diffllama", "llama"])
def test_qa_models_are_well_above_chance(arch):
    examples = corpus.generate("retrieval", HELD_OUT, 30)
    scores = evaluation.qa_scores(bundled(f"{arch}-qa"), examples)
    # a random span of up to 30 context tokens is right about once in a few thousand tries
    assert scores["exact_match"] > 0.2


def test_the_family_is_matched_and_small():
    sizes = [bundled(f"{arch}-lm").info.num_parameters for arch in ("diffllama", "llama", "persimmon")]
    assert max(sizes) / min(sizes) < 1.02
    total = sum(f.stat().st_size for f in MODELS.rglob("*") if f.is_file())
    assert total < 60e6


def test_app_defaults_are_the_bundled_diffllama_and_llama(monkeypatch):
    from components.common import default_sources

    monkeypatch.setenv("DIFFLLAMA_LENS_BUNDLED", str(MODELS))  # the app test points it at tiny models

    for task in ("generation", "classification", "qa", "tagging"):
        assert default_sources(task)[0].startswith("diffllama") and default_sources(task)[1].startswith("llama")
        assert len(bundled_models(task)) == (2 if task == "qa" else 3)
