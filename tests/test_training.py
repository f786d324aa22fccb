"""A few training steps on a micro configuration reduce the loss, for every architecture."""

import pytest
import torch
import transformers

from diffllama import corpus
from diffllama.training import ARCHS, ModelShape, lm_batches, lm_config, num_parameters, train_loop, train_tokenizer

MICRO = ModelShape(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=4, intermediate_size=64, max_position_embeddings=128)


@pytest.fixture(scope="module")
def micro_data():
    texts = corpus.generate("story", 0, 300)
    return train_tokenizer(texts, MICRO.vocab_size), texts


@pytest.mark.parametrize("arch", list(ARCHS))
def test_a_few_steps_reduce_the_loss(arch, micro_data):
    tokenizer, texts = micro_data
    torch.manual_seed(0)
    model = getattr(transformers, ARCHS[arch] + "ForCausalLM")(lm_config(arch, MICRO, tokenizer))
    losses = train_loop(model, lm_batches(tokenizer, texts, 64, 8, seed=0), steps=30, lr=3e-3, log_every=0)
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5


def test_family_parameter_counts_match_within_two_percent(micro_data):
    tokenizer, _ = micro_data
    shape = ModelShape()
    counts = [num_parameters(getattr(transformers, ARCHS[a] + "ForCausalLM")(lm_config(a, shape, tokenizer))) for a in ARCHS]
    assert max(counts) / min(counts) < 1.02
