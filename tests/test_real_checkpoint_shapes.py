"""The loader and trace on checkpoints shaped exactly like the real pair the app presets
(kajuma/DiffLlama-0.3B-handcut and meta-llama/Llama-3.2-1B: hidden 2048, 32 query heads, 8 KV heads,
head_dim 64, llama3 RoPE scaling, tied embeddings), with random weights, 2 layers and a narrow MLP so
the test stays small. Nothing is downloaded: GQA pairing and the scaled RoPE are what is exercised,
and the preset pair's place in the model slots (offered where hub ids may load, a clear message
where the hub cannot be reached or the model is gated)."""

from types import SimpleNamespace

import gradio as gr
import httpx
import pytest
import torch
import transformers
from gradio_client import Client
from huggingface_hub.errors import GatedRepoError

import diffllama
from components import model_slots
from diffllama import loading, registry
from test_trace import TEXT, reference

PAIR = ("kajuma/DiffLlama-0.3B-handcut", "meta-llama/Llama-3.2-1B")

LLAMA_3_2_1B = dict(  # the attention-relevant part of both hub configs
    hidden_size=2048, num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    tie_word_embeddings=True, rms_norm_eps=1e-5, num_hidden_layers=2, intermediate_size=256)


@pytest.fixture(scope="module", params=["diffllama", "llama"])
def real_shaped(request, tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(request.param, vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=1,
                                               eos_token_id=2, **LLAMA_3_2_1B)
    path = tmp_path_factory.mktemp(f"{request.param}-3.2-1b-shape")
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return request.param, path


def test_real_shaped_checkpoints_trace_exactly(real_shaped):
    model_type, path = real_shaped
    lens = diffllama.load(path)
    assert lens.config.rope_parameters["rope_type"] == "llama3" and lens.config.num_key_value_heads == 8
    trace = lens.trace(TEXT)
    eager = reference(path, model_type, trace.input_ids, "eager", output_attentions=True)
    differential = model_type == "diffllama"
    assert trace.num_heads == (16 if differential else 32)
    for layer in range(2):
        maps = eager.attentions[layer][0]  # [32, N, N]
        for head in (0, 3, trace.num_heads - 1):  # first, one inside a KV group, last: pairing i ↔ i + 16 and repeat_kv
            if differential:
                torch.testing.assert_close(trace.attention(layer, head, "a1"), maps[head], atol=1e-5, rtol=0)
                torch.testing.assert_close(trace.attention(layer, head, "a2"), maps[head + 16], atol=1e-5, rtol=0)
                torch.testing.assert_close(trace.attention(layer, head, "diff"),
                                           maps[head] - trace.lambdas[layer] * maps[head + 16], atol=1e-5, rtol=0)
            else:
                torch.testing.assert_close(trace.attention(layer, head, "softmax"), maps[head], atol=1e-5, rtol=0)


def test_the_preset_pair_is_offered_where_hub_ids_may_load(monkeypatch):
    monkeypatch.delenv(registry.HUB_MODELS_ENV, raising=False)  # the tests limit local loading, and so hub ids
    assert model_slots.preset_choices("generation") == []
    monkeypatch.setenv(registry.HUB_MODELS_ENV, "kajuma/*,meta-llama/Llama-3.2-1B")
    assert [hub_id for _, hub_id in model_slots.preset_choices("generation")] == list(PAIR)
    assert model_slots.preset_choices("classification") == []  # both are language models
    with gr.Blocks():
        (slot_a, _, _), (slot_b, _, _) = model_slots.model_slots("generation")
    for slot in (slot_a, slot_b):
        assert [value for _, value in slot.choices][-2:] == list(PAIR)


def test_without_network_the_preset_pair_gets_the_load_message_and_the_app_serves_on(app_url, monkeypatch):
    monkeypatch.setenv(registry.HUB_MODELS_ENV, "kajuma/*,meta-llama/*")
    monkeypatch.setattr(loading, "_PROBE", {"at": float("-inf"), "ok": False})
    monkeypatch.setattr(loading.hub_constants, "ENDPOINT", "http://no-such-host.invalid")  # no network, on any machine
    client = Client(app_url, verbose=False)
    with pytest.raises(Exception, match="the model hub cannot be reached from this server; use a bundled model"):
        client.predict("Anna walked to", 4, True, 0.8, 0.95, 0, *PAIR, api_name="/generate")
    records = client.predict("Anna walked to", 4, True, 0.8, 0.95, 0, "diffllama-lm", "llama-lm", api_name="/generate")[-1]
    assert all(len(records[slot]["token_ids"]) > records[slot]["prompt_length"] for slot in "AB")  # the next run is served


def test_a_gated_checkpoint_says_how_to_get_access(monkeypatch):
    def gated(*args, **kwargs):  # what transformers raises for a gated repo without an accepted token
        refused = GatedRepoError("401", response=httpx.Response(401, request=httpx.Request("GET", "https://hub.invalid")))
        raise OSError("You are trying to access a gated repo.") from refused

    monkeypatch.setattr(loading, "check_hub", lambda: None)
    monkeypatch.setattr(loading, "AutoConfig", SimpleNamespace(from_pretrained=gated))
    with pytest.raises(diffllama.LoadError, match="gated on the hub; accept its terms .* token \\(HF_TOKEN\\)"):
        diffllama.load(PAIR[1])
