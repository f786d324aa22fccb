"""Loading refuses what it cannot open faithfully, with a message saying why; nothing runs from a checkpoint."""

import json
import shutil

import pytest

import diffllama
import diffllama.budget


def copy_checkpoint(checkpoint, tmp_path, name="llama-gqa"):
    target = tmp_path / "copy"
    shutil.copytree(checkpoint(name), target)
    return target


def edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_bad_sources_get_clear_errors(tmp_path, checkpoint):
    with pytest.raises(diffllama.LoadError, match="no such directory"):
        diffllama.load(tmp_path / "missing")
    with pytest.raises(diffllama.LoadError, match="has no config.json"):
        diffllama.load(tmp_path)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(diffllama.LoadError, match="'bert' is not supported; DiffLlama Lens loads diffllama, llama, persimmon"):
        diffllama.load(bert)
    remote = tmp_path / "remote"
    shutil.copytree(checkpoint("llama-gqa"), remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (remote / "config.json").write_text(json.dumps(config))
    with pytest.raises(diffllama.LoadError, match="asks for remote code"):
        diffllama.load(remote)
    with pytest.raises(diffllama.LoadError, match="unknown task 'summarise'"):
        diffllama.load(checkpoint("llama-gqa"), task="summarise")


def test_damaged_weights_get_clear_errors(tmp_path, checkpoint):
    truncated = copy_checkpoint(checkpoint, tmp_path)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(diffllama.LoadError, match="corrupted or truncated"):
        diffllama.load(truncated)
    weights.write_bytes(b"not a safetensors file" * 10)
    with pytest.raises(diffllama.LoadError, match="corrupted or truncated"):
        diffllama.load(truncated)


def test_weights_that_do_not_match_the_config_are_refused(tmp_path, checkpoint):
    wider = copy_checkpoint(checkpoint, tmp_path)
    edit_config(wider, hidden_size=64, intermediate_size=128)
    with pytest.raises(diffllama.LoadError, match="other shapes than config.json describes"):
        diffllama.load(wider)
    deeper = tmp_path / "deeper"
    shutil.copytree(checkpoint("llama-gqa"), deeper)
    edit_config(deeper, num_hidden_layers=4)  # layer 3 would be random
    with pytest.raises(diffllama.LoadError, match="tensors missing or mis-shaped"):
        diffllama.load(deeper)
    # a language model has no trained classification head: refused, not randomly initialised
    with pytest.raises(diffllama.LoadError, match="Is this a classification checkpoint"):
        diffllama.load(checkpoint("llama-gqa"), task="classification")


def test_local_loading_is_limited_to_configured_directories(tmp_path, checkpoint, monkeypatch):
    inside = tmp_path / "models"
    inside.mkdir()
    shutil.copytree(checkpoint("llama-gqa"), inside / "llama")
    monkeypatch.setenv(diffllama.loading.ALLOWED_DIRS_ENV, str(inside))
    assert diffllama.load(inside / "llama").arch == "llama"
    for probe in (checkpoint("llama-gqa"), "/etc", "/definitely/missing", str(inside / ".." / ".." )):
        with pytest.raises(diffllama.LoadError, match="only be loaded from the configured model directories"):
            diffllama.load(probe)


def test_requests_above_the_memory_budget_get_a_message(checkpoint, monkeypatch):
    lens = diffllama.load(checkpoint("llama-gqa"))
    trace = lens.trace("word " * 50)
    monkeypatch.setenv(diffllama.budget.BUDGET_ENV, "0.00001")  # 10 kB
    with pytest.raises(diffllama.budget.MemoryBudgetError, match="shorten the input"):
        lens.trace("word " * 200)
    with pytest.raises(diffllama.budget.MemoryBudgetError, match="use the pooled map instead"):
        trace.attention(0, 0, "softmax")
    with pytest.raises(diffllama.budget.MemoryBudgetError, match="ask for fewer new tokens"):
        lens.generate("Anna walked", max_new_tokens=500)
    monkeypatch.delenv(diffllama.budget.BUDGET_ENV)
    assert lens.trace("word " * 200).seq_len > 200  # the next request works


def test_inputs_beyond_the_maximum_length_are_truncated_with_a_notice(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa", "classification"))
    result = lens.classify("word " * 700)  # max_position_embeddings is 512
    assert result.trace.seq_len == 512 and result.trace.truncated_from > 512
    assert lens.classify("word " * 10).trace.truncated_from is None


def test_model_cache_is_bounded_by_count_and_bytes(checkpoint):
    from diffllama.registry import ModelCache

    cache = ModelCache(max_models=2, max_bytes=1e9)
    first = cache.get(str(checkpoint("llama-gqa")), "generation")
    assert cache.get(str(checkpoint("llama-gqa")), "generation") is first  # cached
    cache.get(str(checkpoint("diffllama-gqa")), "generation")
    cache.get(str(checkpoint("persimmon")), "generation")
    assert len(cache) == 2 and cache.get(str(checkpoint("llama-gqa")), "generation") is not first  # evicted, reloaded
    tiny = ModelCache(max_models=5, max_bytes=1)  # smaller than any model: keeps only the newest
    tiny.get(str(checkpoint("llama-gqa")), "generation")
    tiny.get(str(checkpoint("persimmon")), "generation")
    assert len(tiny) == 1
    with pytest.raises(diffllama.LoadError):
        cache.get("/no/such/model", "generation")
    assert len(cache) == 2  # a failed load leaves the cache as it was
