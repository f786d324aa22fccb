"""Random-weight checkpoints with the real pair's exact configs, built locally (nothing downloaded),
and the scales the check runs at."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from diffllama.family.features import tokenizer_texts, train_tokenizer

REAL_PAIR = {"diffllama": "kajuma/DiffLlama-0.3B-handcut", "llama": "meta-llama/Llama-3.2-1B"}
REAL_CONFIG = dict(  # both hub configs (tests/test_real_checkpoint_shapes.py has their attention part)
    hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
    intermediate_size=8192, vocab_size=128256, max_position_embeddings=131072, tie_word_embeddings=True,
    rms_norm_eps=1e-5, rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 8192})
# the same kinds of heads (GQA 4:1), RoPE scaling and tied embeddings, small enough for seconds on a CPU
TINY_CONFIG = REAL_CONFIG | dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                                 head_dim=8, intermediate_size=128, vocab_size=None)


@dataclass(frozen=True)
class Scale:
    name: str
    config: dict  # vocab_size None: the local tokenizer's size
    exact_tokens: int  # input length of the comparison with eager attention
    lengths: tuple[int, ...]  # trace vs plain forward
    view_lengths: tuple[int, ...]
    new_tokens: int  # streaming vs generate
    stream_repeats: int
    study_examples: int
    study_fillers: int  # haystack sentences per study input (≈ 9 tokens each)
    study_resamples: int  # bootstrap resamples of its confidence intervals


SCALES = {
    "full": Scale("full", REAL_CONFIG, exact_tokens=512, lengths=(2048, 8192, 32768), view_lengths=(2048, 8192),
                  new_tokens=128, stream_repeats=3, study_examples=50, study_fillers=28, study_resamples=2000),
    "tiny": Scale("tiny", TINY_CONFIG, exact_tokens=40, lengths=(64, 128, 256), view_lengths=(64, 128),
                  new_tokens=8, stream_repeats=1, study_examples=4, study_fillers=2, study_resamples=20),
}


def tokenizer():
    """A small byte-level BPE (the bundled models' recipe): the tokens only label the axes, and the
    text of a given length is what it tokenises."""
    return train_tokenizer(tokenizer_texts(0, 1000), vocab_size=300)


def build(arch: str, scale: Scale, root: Path, device: torch.device) -> Path:
    """``root/<arch>-<scale>``: a random-weight causal LM of ``arch`` with ``scale``'s config, saved in
    bfloat16 (as the real checkpoints are) with the local tokenizer; reused when already built. The
    weights are drawn on ``device`` (a 1.2 B model initialises in seconds on a GPU)."""
    path = root / f"{arch}-{scale.name}"
    if (path / "tokenizer.json").exists():  # written last
        return path
    words = tokenizer()
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(arch, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                               **(scale.config | {"vocab_size": scale.config["vocab_size"] or len(words)}))
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config)
    # a random model over a small tokenizer generates only ids the tokenizer can show, or nothing would stream
    unshown = list(range(len(words), config.vocab_size))
    model.generation_config.suppress_tokens = unshown or None
    model.to(torch.bfloat16).save_pretrained(path)
    words.model_max_length = config.max_position_embeddings
    words.save_pretrained(path)
    return path


@functools.lru_cache(maxsize=16)
def text_of(tokenizer, n: int) -> str:
    """Story text that ``tokenizer`` reads as about ``n`` tokens (``bench.story_text``)."""
    import bench

    return bench.story_text(tokenizer, n)
