"""Loading refuses what it cannot open faithfully, with a message saying why; nothing runs from a checkpoint."""

import concurrent.futures
import json
import shutil
import threading

import pytest
import transformers

import diffllama
import diffllama.budget
from diffllama import loading, registry


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


def test_sources_outside_the_allow_lists_all_get_one_message(tmp_path, checkpoint, monkeypatch):
    inside = tmp_path / "models"
    inside.mkdir()
    shutil.copytree(checkpoint("llama-gqa"), inside / "llama")
    monkeypatch.setenv(registry.MODEL_DIRS_ENV, str(inside))
    monkeypatch.delenv(registry.HUB_MODELS_ENV, raising=False)
    assert registry.ModelCache().get(str(inside / "llama"), "generation").arch == "llama"
    # existing and missing, absolute and short relative paths, hub-like names: nothing tells them apart
    probes = [str(checkpoint("llama-gqa")), "/etc", "/proc/self", "/definitely/missing", str(inside / ".." / ".."),
              "tests", "no-such-name", "owner/model", "../..", "~"]
    messages = set()
    for probe in probes:
        with pytest.raises(diffllama.LoadError) as refused:
            registry.resolve_source(probe, "generation")
        messages.add(str(refused.value).replace(repr(probe), "SOURCE"))
    assert messages == {"SOURCE is not a model this server loads: choose a bundled model"}


def test_a_public_server_loads_only_bundled_models_unless_told_otherwise(tmp_path, checkpoint, bundle, monkeypatch):
    monkeypatch.setenv(registry.BUNDLED_ENV, str(bundle))
    monkeypatch.delenv(registry.MODEL_DIRS_ENV)
    monkeypatch.delenv(registry.HUB_MODELS_ENV, raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/diffllama-lens")
    assert registry.resolve_source("llama-lm", "generation").name == "llama-lm"
    for probe in (str(checkpoint("llama-gqa")), "kajuma/DiffLlama-0.3B-handcut"):
        with pytest.raises(diffllama.LoadError, match="is not a model this server loads"):
            registry.resolve_source(probe, "generation")
    monkeypatch.setenv(registry.HUB_MODELS_ENV, "kajuma/*")
    source = registry.resolve_source("kajuma/DiffLlama-0.3B-handcut@v1", "generation")
    assert source.hub and source.key == ("kajuma/DiffLlama-0.3B-handcut", "v1")
    with pytest.raises(diffllama.LoadError, match="is not a model this server loads"):
        registry.resolve_source("someone-else/model", "generation")


def test_one_checkpoint_spelled_many_ways_loads_once(tmp_path, checkpoint):
    directory = tmp_path / "llama"
    shutil.copytree(checkpoint("llama-gqa"), directory)
    (tmp_path / "alias").symlink_to(directory)
    cache = registry.ModelCache()
    spellings = [str(directory), f"{directory}/././.", f"{directory}/../llama", str(tmp_path / "alias")]
    models = {id(cache.get(spelling, "generation")) for spelling in spellings * 5}
    assert len(models) == 1 and len(cache) == 1
    assert cache.get(str(directory), "generation").source == "llama"  # messages name it, never its server path


def test_hub_ids_fail_fast_without_network(monkeypatch):
    monkeypatch.setattr(diffllama.loading, "_PROBE", {"at": float("-inf"), "ok": False})
    monkeypatch.setattr(diffllama.loading.hub_constants, "is_offline_mode", lambda: True)
    with pytest.raises(diffllama.LoadError, match="runs offline"):
        diffllama.load("owner/model")
    monkeypatch.setattr(diffllama.loading.hub_constants, "is_offline_mode", lambda: False)
    monkeypatch.setattr(diffllama.loading.hub_constants, "ENDPOINT", "http://no-such-host.invalid")
    with pytest.raises(diffllama.LoadError, match="model hub cannot be reached"):
        diffllama.load("owner/model")


def test_loads_wait_a_bounded_time_share_one_load_and_land_in_the_cache(checkpoint, monkeypatch):
    slow, calls = threading.Event(), []

    def slow_load(spec, **kwargs):
        calls.append(spec)
        slow.wait(120)  # only a hang's bound: the test releases it
        return diffllama.load(spec, **kwargs)

    monkeypatch.setattr(registry, "load", slow_load)
    cache = registry.ModelCache(load_seconds=0.2)
    source = str(checkpoint("llama-gqa"))
    for _ in range(3):  # each waits its bound and gives up while the one load is held
        with pytest.raises(diffllama.LoadError, match="still loading after 0 s"):
            cache.get(source, "generation")
    assert len(calls) == 1 and not slow.is_set()  # three requests, one load, still held
    slow.set()
    concurrent.futures.wait(list(cache._loading.values()), timeout=120)  # only a hang's bound
    assert len(cache) == 1 and cache.get(source, "generation").arch == "llama"


def test_a_checkpoint_above_the_size_limit_is_refused_before_its_weights_are_read(checkpoint, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("weights were read")

    monkeypatch.setattr(transformers.LlamaForCausalLM, "from_pretrained", no_weights)
    with pytest.raises(diffllama.LoadError, match="its parameters take about 0.0 GB, above this server's limit"):
        registry.ModelCache(max_model_bytes=1000).get(str(checkpoint("llama-gqa")), "generation")


def test_requests_above_the_memory_budget_get_a_message(checkpoint, monkeypatch):
    lens = diffllama.load(checkpoint("llama-gqa"))
    trace = lens.trace("word " * 50)
    monkeypatch.setenv(diffllama.budget.BUDGET_ENV, "0.00001")  # 10 kB
    with pytest.raises(diffllama.budget.MemoryBudgetError, match="shorten the input"):
        lens.trace("word " * 150)
    with pytest.raises(diffllama.budget.MemoryBudgetError, match="use the pooled map"):
        trace.attention(0, 0, "softmax")
    with pytest.raises(diffllama.budget.MemoryBudgetError, match="ask for fewer new tokens"):
        lens.generate("Anna walked", max_new_tokens=500)
    monkeypatch.delenv(diffllama.budget.BUDGET_ENV)
    assert lens.trace("word " * 150).seq_len > 150  # the next request works


def test_inputs_past_the_model_positions_are_refused_before_any_trace(checkpoint, monkeypatch):
    classifier = diffllama.load(checkpoint("diffllama-gqa", "classification"))
    tagger = diffllama.load(checkpoint("llama-gqa", "tagging"))
    language_model = diffllama.load(checkpoint("diffllama-gqa"))
    monkeypatch.setattr(loading, "run_trace", lambda *args: pytest.fail("traced"))
    marks = "a" + "\u0301" * 5_000  # 5,001 characters, each mark its own tokens
    refused = r"the {} is [\d,]+ tokens; \S+ was trained on 512 positions, so it reads at most {} tokens"
    for run in (classifier.classify, tagger.tag, language_model.trace):
        with pytest.raises(ValueError, match=refused.format("text", 512)):
            run(marks)
    with pytest.raises(ValueError, match=refused.format("prompt", 511) + r" \(1 kept for a new token\)"):
        language_model.generate(marks)
    monkeypatch.undo()
    words = "word " * 600
    fits = next(n for n in range(600, 0, -1) if len(classifier.tokenizer(words[:5 * n])["input_ids"]) <= 512)
    assert classifier.classify(words[:5 * fits]).trace.seq_len == len(classifier.tokenizer(words[:5 * fits])["input_ids"])
    with pytest.raises(ValueError, match=refused.format("text", 512)):
        classifier.classify(words[:5 * (fits + 1)])


def test_model_cache_is_bounded_by_count_and_bytes(checkpoint):
    cache = registry.ModelCache(max_models=2, max_bytes=1e9)
    first = cache.get(str(checkpoint("llama-gqa")), "generation")
    assert cache.get(str(checkpoint("llama-gqa")), "generation") is first  # cached
    cache.get(str(checkpoint("diffllama-gqa")), "generation")
    cache.get(str(checkpoint("persimmon")), "generation")
    assert len(cache) == 2 and cache.get(str(checkpoint("llama-gqa")), "generation") is not first  # evicted, reloaded
    tiny = registry.ModelCache(max_models=5, max_bytes=1)  # smaller than any model: keeps only the newest
    tiny.get(str(checkpoint("llama-gqa")), "generation")
    tiny.get(str(checkpoint("persimmon")), "generation")
    assert len(tiny) == 1
    with pytest.raises(diffllama.LoadError):
        cache.get("/no/such/model", "generation")
    assert len(cache) == 2  # a failed load leaves the cache as it was
