"""Quantized slots: a ``#scheme`` source loads through transformers' TorchAoConfig and equals
transformers' own quantized model; unknown schemes and missing kernels are refused clearly; the
comparison with the full model reads what changed."""

import numpy as np
import pytest
import torch
import transformers
from transformers import TorchAoConfig

import diffllama
from diffllama import interventions
from diffllama.interventions import quantize
from diffllama.provenance import provenance
from diffllama.registry import ModelCache, resolve_source

TEXT = "The magic number of Lyon is 4821. The magic number of Paris is 1234. What is the magic number of Lyon?"


@pytest.mark.parametrize("scheme", ["int8", "int8-dynamic"])
def test_a_quantized_slot_equals_transformers_own_quantized_model(checkpoint, scheme):
    path = checkpoint("diffllama-gqa")
    lens = diffllama.load(f"{path}#{scheme}")
    config_class = {"int8": "Int8WeightOnlyConfig", "int8-dynamic": "Int8DynamicActivationInt8WeightConfig"}[scheme]
    import torchao.quantization

    own = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, quantization_config=TorchAoConfig(getattr(torchao.quantization, config_class)())).eval()
    assert type(lens.model.base_model.layers[0].self_attn.o_proj.weight) is type(own.model.layers[0].self_attn.o_proj.weight)
    ids = torch.tensor([lens.tokenizer(TEXT)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(lens.model(ids).logits, own(ids).logits, atol=1e-5, rtol=0)
    full = diffllama.load(path).trace(TEXT).logits
    assert not torch.equal(lens.trace(TEXT).logits, full)  # it is quantized


def test_the_slot_and_provenance_name_the_quantization(checkpoint):
    path = str(checkpoint("llama-gqa"))
    source = resolve_source(f"{path}#int8", "generation")
    assert source.quantization == "int8" and source.spec == f"{resolve_source(path, 'generation').spec}#int8"
    assert source.key != resolve_source(path, "generation").key and source.name.endswith("#int8")
    cache = ModelCache(load_seconds=120)
    assert cache.get(f"{path}#int8", "generation").source.endswith("#int8")
    stamp = provenance({"A": f"{path}#int8", "B": path}, {"text": TEXT})
    assert stamp.models["A"].endswith("#int8") and stamp.versions["torchao"] not in ("", "not installed")
    assert "torchao" not in provenance({"A": path}, {"text": TEXT}).versions


def test_unknown_schemes_and_missing_kernels_are_refused(checkpoint):
    path = str(checkpoint("llama-gqa"))
    with pytest.raises(diffllama.LoadError, match="unknown quantization 'int3' after '#'; choose one of int8, int8-dynamic, int4"):
        resolve_source(f"{path}#int3", "generation")
    with pytest.raises(diffllama.LoadError, match="unknown quantization 'fp8'"):
        diffllama.load(f"{path}#fp8")
    if quantize.missing_kernels("int4") is None:
        pytest.skip("this machine has the int4 kernels")  # the refusal below is for machines without them
    with pytest.raises(diffllama.LoadError, match="int4 weight-only, groups of 32 quantization cannot run on this machine: "
                                                  "its kernels are missing .*; choose int8 or int8-dynamic"):
        diffllama.load(f"{path}#int4")


def test_comparison_with_the_quantized_copy(checkpoint):
    path = checkpoint("diffllama-gqa")
    full, quantized = diffllama.load(path), diffllama.load(f"{path}#int8-dynamic")
    result = interventions.compare_quantized(full, quantized, TEXT)
    trace = full.trace(TEXT)
    assert len(result.kl) == trace.seq_len and min(result.kl) >= 0 and max(result.kl) > 0
    assert 0 <= result.top1_agreement <= 1 and result.answer.chosen == "predicted"
    assert result.lambdas[0] == pytest.approx(result.lambdas[1])  # the λ vectors are not linear weights: kept in full precision
    assert len(result.map_change) == trace.num_layers and all(0 < m <= big for m, big in zip(result.map_change, result.map_change_max))
    quantized_trace = quantized.trace(TEXT)
    layer = 2  # the mean |Δ| of the maps, by brute force
    brute = np.mean([(trace.attention(layer, h, "diff") - quantized_trace.attention(layer, h, "diff")).abs().sum().item()
                     for h in range(trace.num_heads)]) / (trace.seq_len * (trace.seq_len + 1) / 2)
    assert result.map_change[layer] == pytest.approx(brute, rel=1e-4)
    assert set(result.outliers[0].hidden_states) == set(result.outliers[1].hidden_states)
