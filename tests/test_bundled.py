"""The bundled family loads through diffllama.load and clears floors far above chance on a small
held-out sample (the full evaluation: python -m diffllama.family.evaluate)."""

from pathlib import Path

import pytest

import diffllama
from diffllama.family import corpus, evaluate
from diffllama.registry import bundled_models

MODELS = Path(__file__).resolve().parents[1] / "assets" / "models"
HELD_OUT = corpus.HELD_OUT_SEED


def bundled(name):
    path = MODELS / name
    assert (path / "config.json").exists() and (path / "model.safetensors").exists() and (path / "README.md").exists(), \
        f"{name} is missing: run python -m diffllama.family.train"
    return diffllama.load(path, device="cpu")


@pytest.mark.parametrize("arch", ["diffllama", "llama", "persimmon"])
def test_language_models_read_stories_and_retrieve_needles(arch):
    lens = bundled(f"{arch}-lm")
    assert lens.arch == arch and lens.task == "generation" and lens.config.max_position_embeddings >= 2048
    stories = [s.text for s in corpus.generate("story", HELD_OUT, 20)]
    assert evaluate.perplexity(lens.model, lens.tokenizer, stories) < 10  # uniform guessing scores 2048
    examples = evaluate.retrieval_set(HELD_OUT, 10, 256)  # 4 needles + a look-alike: chance ≈ 0
    assert evaluate.retrieval_accuracy(lens.model, lens.tokenizer, examples) >= 0.5


@pytest.mark.parametrize("arch", ["diffllama", "llama", "persimmon"])
def test_heads_beat_chance(arch):
    scores = evaluate.evaluate_head(MODELS / f"{arch}-cls", "cls", 30, device="cpu")
    assert scores["accuracy"] > scores["majority_baseline"] + 0.2
    assert evaluate.evaluate_head(MODELS / f"{arch}-tag", "tag", 15, device="cpu")["all"]["entity_f1"] > 0.9
    if arch != "persimmon":  # transformers has no Persimmon QA head
        assert evaluate.evaluate_head(MODELS / f"{arch}-qa", "qa", 15, device="cpu")["exact_match"] > 0.8


def test_the_family_is_matched_and_small():
    sizes = [bundled(f"{arch}-lm").info.num_parameters for arch in ("diffllama", "llama", "persimmon")]
    assert max(sizes) / min(sizes) < 1.02
    total = sum(f.stat().st_size for f in MODELS.rglob("*") if f.is_file())
    assert total < 60e6


def test_app_defaults_are_the_bundled_diffllama_and_llama(monkeypatch):
    from components.model_slots import default_sources

    monkeypatch.setenv("DIFFLLAMA_LENS_BUNDLED", str(MODELS))  # the app test points it at tiny models

    for task in ("generation", "classification", "qa", "tagging"):
        assert default_sources(task)[0].startswith("diffllama") and default_sources(task)[1].startswith("llama")
        assert len(bundled_models(task)) == (2 if task == "qa" else 3)
