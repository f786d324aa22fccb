"""Tiny seeded checkpoints of every architecture and head, built locally (nothing downloaded)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import transformers
from transformers import PreTrainedTokenizerFast

from diffllama.family.features import train_tokenizer

# The app's exports go to a folder of this test run's own (before any app module reads the setting): tests that
# check what a view writes there must not see another process's exports (two checkouts tested at once).
os.environ.setdefault("DIFFLLAMA_LENS_EXPORT_DIR", tempfile.mkdtemp(prefix="diffllama-lens-test-exports-"))

CORPUS = [
    "The magic number of Lyon is 4821. Anna walked to the old market in Paris.",
    "Bob works at Acme Corp since 2019. The cat sat on the mat and looked happy.",
    "What is the magic number of Lyon? It was not bad at all, quite good really.",
    "Émile drove 3 km to Zürich on 12 May. Numbers like 17, 256 and 1024 appear too.",
]

# name -> (model_type, config overrides). GQA variants exercise repeat_kv's head mapping.
ARCHS = {
    "diffllama-mha": ("diffllama", dict(num_attention_heads=4, num_key_value_heads=4)),
    "diffllama-gqa": ("diffllama", dict(num_attention_heads=8, num_key_value_heads=2)),
    "llama-gqa": ("llama", dict(num_attention_heads=4, num_key_value_heads=2)),
    "persimmon": ("persimmon", dict(num_attention_heads=4, qk_layernorm=True, partial_rotary_factor=0.5)),
}
PREFIX = {"diffllama": "DiffLlama", "llama": "Llama", "persimmon": "Persimmon"}
HEAD_CLASSES = {"generation": "ForCausalLM", "classification": "ForSequenceClassification",
                "qa": "ForQuestionAnswering", "tagging": "ForTokenClassification"}


def build_tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer(CORPUS, vocab_size=300)  # the bundled models' recipe, on a tiny corpus


def build_model(model_type: str, overrides: dict, task: str, vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.AutoConfig.for_model(
        model_type, vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        max_position_embeddings=512, initializer_range=0.3, pad_token_id=0, bos_token_id=1, eos_token_id=2, **overrides)
    if task in ("classification", "tagging"):
        labels = ["negative", "positive"] if task == "classification" else ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    model = getattr(transformers, PREFIX[model_type] + HEAD_CLASSES[task])(config)
    if model_type == "diffllama":  # λ vectors start near zero; spread them so λ differs per layer
        for layer in model.base_model.layers:
            for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
                torch.nn.init.normal_(getattr(layer.self_attn, name), std=0.3)
    return model.eval()


@pytest.fixture(scope="session", autouse=True)
def model_dirs(tmp_path_factory):
    """The app may load checkpoints from the tests' temporary folders (its default depends on whether
    it runs in a container, which must not decide what the tests see)."""
    import os

    from diffllama.registry import MODEL_DIRS_ENV

    os.environ[MODEL_DIRS_ENV] = str(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, tokenizer):
    """``checkpoint(name, task)`` -> path of a saved tiny checkpoint, built once per session."""
    built = {}

    def get(name: str, task: str = "generation"):
        if (name, task) not in built:
            model_type, overrides = ARCHS[name]
            path = tmp_path_factory.mktemp(f"{name}-{task}")
            build_model(model_type, overrides, task, len(tokenizer)).save_pretrained(path)
            tokenizer.save_pretrained(path)
            built[name, task] = path
        return built[name, task]

    return get


BUNDLE_NAMES = {"generation": "lm", "classification": "cls", "qa": "qa", "tagging": "tag"}


@pytest.fixture(scope="session")
def bundle(checkpoint, tmp_path_factory):
    """A directory laid out like assets/models, holding tiny checkpoints of every arch × task."""
    root = tmp_path_factory.mktemp("bundle")
    for name in ("diffllama-gqa", "llama-gqa", "persimmon"):
        for task, suffix in BUNDLE_NAMES.items():
            if name == "persimmon" and task == "qa":
                continue
            (root / f"{name.split('-')[0]}-{suffix}").symlink_to(checkpoint(name, task))
    return root


@pytest.fixture(scope="session")
def app_demo(bundle):
    """The app launched on a free local port with the tiny bundle as its bundled models."""
    import os

    os.environ["DIFFLLAMA_LENS_BUNDLED"] = str(bundle)
    import app

    demo = app.build()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True, **app.launch_settings())
    yield demo
    demo.close()


@pytest.fixture(scope="session")
def app_url(app_demo):
    return app_demo.local_url
