"""Interventions: each equals a copy of the model with its parameters edited by hand, patching is
consistent with itself, the logit lens equals the model's own head on its hidden states, the model is
bit-identical afterwards, and concurrent requests do not see each other's interventions."""

import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import diffllama
from diffllama import interventions
from diffllama.interventions import core, heads, lambdas, patching
from diffllama.interventions.lens import final_norm
from diffllama.trace import LambdaOverride

TEXT = "The magic number of Lyon is 4821. The magic number of Paris is 1234. What is the magic number of Lyon?"
CORRUPTED = TEXT.replace("of Lyon?", "at Lyon?")  # one token differs (the tiny tokenizer has " of" and " at")


def _logits(lens, intervention=None) -> torch.Tensor:
    ids = lens.tokenizer(TEXT)["input_ids"]
    return core.run(lens.model, ids, intervention).logits[0]


def _set_lambda(attention, target: float) -> None:
    """Edit the four λ vectors so that exp(q1·k1) − exp(q2·k2) + λ_init equals ``target``."""
    with torch.no_grad():
        for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            getattr(attention, name).zero_()  # exp(0) − exp(0) = 0
        if target - attention.lambda_init + 1 > 0:
            attention.lambda_q1[0] = 1.0
            attention.lambda_k1[0] = math.log(target - attention.lambda_init + 1)
        else:
            attention.lambda_q2[0] = 1.0
            attention.lambda_k2[0] = math.log(1 + attention.lambda_init - target)


@pytest.mark.parametrize("values, scale", [({0: -1.4, 2: 1.3}, None), ({1: 0.0}, None), (None, -0.5)])
def test_lambda_per_layer_equals_a_copy_with_lambda_vectors_edited(checkpoint, values, scale):
    lens = diffllama.load(checkpoint("diffllama-mha"))
    trace = lens.trace(TEXT)
    targets = lambdas.lambda_values(trace, values, scale)
    got = _logits(lens, core.Intervention(lambdas=LambdaOverride(targets, trace.lambdas)))
    edited = diffllama.load(checkpoint("diffllama-mha"))
    for layer, target in targets.items():
        _set_lambda(edited.model.base_model.layers[layer].self_attn, target)
    assert diffllama.trace.architecture_of(edited.model.config).lambdas(edited.model)[0] == pytest.approx(
        [targets.get(layer, lam) for layer, lam in enumerate(trace.lambdas)], abs=1e-6)
    torch.testing.assert_close(got, _logits(edited), atol=1e-5, rtol=0)
    result = interventions.set_lambdas(lens, trace, values, scale)
    assert result.answer.rank[0] == 1 and result.answer.chosen == "predicted" and len(result.outputs.kl) == trace.seq_len


@pytest.mark.parametrize("name", ["diffllama-gqa", "llama-gqa", "persimmon"])
def test_head_ablation_equals_a_copy_with_the_heads_output_projection_slice_zeroed(checkpoint, name):
    lens = diffllama.load(checkpoint(name))
    ablated = [(1, 1), (2, 0)]
    got = _logits(lens, core.Intervention(heads=[core.HeadEdit(layer, head, "zero") for layer, head in ablated]))
    edited = diffllama.load(checkpoint(name))
    count, width = core.head_shape(edited.model)
    config = edited.config
    head_dim = config.hidden_size // config.num_attention_heads
    differential = name.startswith("diffllama")  # H/2 differential heads, each 2·head_dim wide
    assert (count, width) == ((config.num_attention_heads // 2, 2 * head_dim) if differential else (config.num_attention_heads, head_dim))
    with torch.no_grad():
        for layer, head in ablated:
            core.output_projection(edited.model, layer).weight[:, head * width:(head + 1) * width] = 0
    torch.testing.assert_close(got, _logits(edited), atol=1e-5, rtol=0)
    assert not torch.allclose(got, _logits(lens), atol=1e-4)  # and the ablation did change something


def test_mean_ablation_sets_the_heads_output_to_its_mean_over_positions(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa"))
    trace = lens.trace(TEXT)
    recorded = {}
    core.run(lens.model, trace.input_ids, core.Intervention(heads=[core.HeadEdit(2, 1, "mean")], record=recorded))
    plain = patching.clean_head_outputs(lens, trace)[2][:, 1]  # [N, w]: layer 2 sees no earlier edit
    torch.testing.assert_close(recorded[2][0, :, 1], plain.mean(0).expand_as(plain), atol=1e-6, rtol=0)
    torch.testing.assert_close(recorded[2][0, :, 0], patching.clean_head_outputs(lens, trace)[2][:, 0], atol=0, rtol=0)


def test_head_effects_map_equals_ablating_each_head_alone(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa"))
    trace = lens.trace(TEXT)
    effects = interventions.head_effects(lens, trace)
    assert effects.logit_change.shape == (trace.num_layers, trace.num_heads)
    for layer, head in [(0, 0), (2, 3)]:
        alone = interventions.ablate_heads(lens, trace, [(layer, head)])
        assert effects.logit_change[layer, head] == pytest.approx(alone.answer.logit[1] - alone.answer.logit[0], abs=1e-4)
        assert alone.answer.token == effects.answer


def test_patching_clean_into_clean_changes_nothing(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa"))
    trace = lens.trace(TEXT)
    answer = int(trace.logits[-1].argmax())
    result = interventions.activation_patching(lens, trace, lens.trace(TEXT), answer)
    assert result.first_difference == trace.seq_len and "nothing to recover" in result.note
    np.testing.assert_allclose(result.heads_metric, result.metric_clean, atol=1e-5)
    assert np.isnan(result.heads).all() and np.isnan(result.residual).all()


def test_patching_every_head_of_a_layer_reproduces_the_clean_attention_output(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa"))
    clean, corrupted = lens.trace(TEXT), lens.trace(CORRUPTED)
    assert clean.seq_len == corrupted.seq_len and clean.input_ids != corrupted.input_ids
    layer = 1
    projection = core.output_projection(lens.model, layer)
    seen = []
    handle = projection.register_forward_hook(lambda module, args, output: seen.append(output[0].clone()))
    try:
        core.run(lens.model, clean.input_ids, None)
        sources = patching.clean_head_outputs(lens, clean)[layer]
        edits = [core.HeadEdit(layer, head, "patch", source=sources[:, head]) for head in range(clean.num_heads)]
        core.run(lens.model, corrupted.input_ids, core.Intervention(heads=edits))
        core.run(lens.model, corrupted.input_ids, None)
    finally:
        handle.remove()
    clean_output, patched_output, corrupted_output = seen[0], seen[-2], seen[-1]
    torch.testing.assert_close(patched_output, clean_output, atol=1e-6, rtol=0)
    assert not torch.allclose(corrupted_output, clean_output, atol=1e-4)


def test_patching_shares_and_the_residual_at_the_query(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa"))
    clean, corrupted = lens.trace(TEXT), lens.trace(CORRUPTED)
    answer = int(clean.logits[-1].argmax())
    result = interventions.activation_patching(lens, clean, corrupted, answer)
    assert result.heads.shape == (clean.num_layers, clean.num_heads) and result.note is None
    recovered = (result.heads_metric - result.metric_corrupted) / (result.metric_clean - result.metric_corrupted)
    np.testing.assert_allclose(result.heads, recovered)
    first = result.first_difference
    assert np.isnan(result.residual[:, :first]).all() and not np.isnan(result.residual[:, first:]).any()
    # the residual entering layer 0 at every differing position is the embedding; patching the only differing
    # position there turns the corrupted input into the clean one
    assert [p for p in range(clean.seq_len) if clean.input_ids[p] != corrupted.input_ids[p]] == [first]
    assert result.residual[0, first] == pytest.approx(1.0, abs=1e-4)


def test_patching_refuses_inputs_of_different_token_lengths(checkpoint):
    lens = diffllama.load(checkpoint("llama-gqa"))
    with pytest.raises(ValueError, match="tokenise to .* tokens; patching needs equal lengths"):
        interventions.activation_patching(lens, lens.trace(TEXT), lens.trace(TEXT + " And Paris?"), 5)


@pytest.mark.parametrize("name", ["diffllama-gqa", "persimmon"])
def test_logit_lens_equals_the_final_norm_and_head_on_hidden_states(checkpoint, name):
    lens = diffllama.load(checkpoint(name))
    trace = lens.trace(TEXT)
    answer = 7
    result = interventions.logit_lens(lens, trace, answer)
    ids = torch.tensor([trace.input_ids])
    with torch.no_grad():
        output = lens.model(ids, output_hidden_states=True)
        manual = lens.model.lm_head(final_norm(lens.model)(torch.stack(output.hidden_states)[:, 0, -1]))
    probabilities = torch.softmax(manual, -1)[:, answer]
    np.testing.assert_allclose(result.probability, probabilities.numpy(), atol=1e-6)
    assert result.rank == [int((row > row[answer]).sum()) + 1 for row in manual]
    torch.testing.assert_close(manual[-1], output.logits[0, -1], atol=1e-5, rtol=0)  # the last entry is the model's output
    assert len(result.rank) == trace.num_layers + 1


def test_logit_lens_emergence_is_where_the_prediction_stays_on_top(checkpoint):
    lens = diffllama.load(checkpoint("llama-gqa"))
    result = interventions.logit_lens(lens, lens.trace(TEXT))  # the model's own prediction: on top at the end
    assert result.rank[-1] == 1 and result.emergence is not None
    assert all(rank == 1 for rank in result.rank[result.emergence:])
    assert result.emergence == 0 or result.rank[result.emergence - 1] > 1


def test_the_model_is_bit_identical_after_every_intervention(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa"))
    before = {name: tensor.clone() for name, tensor in lens.model.state_dict().items()}
    trace = lens.trace(TEXT)
    interventions.set_lambdas(lens, trace, {0: -2.0})
    interventions.ablate_heads(lens, trace, [(0, 1), (1, 2)], "mean")
    interventions.head_effects(lens, trace)
    interventions.activation_patching(lens, trace, lens.trace(CORRUPTED), 5)
    interventions.logit_lens(lens, trace)
    after = lens.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[name], after[name]) for name in before)
    torch.testing.assert_close(lens.trace(TEXT).logits, trace.logits, atol=0, rtol=0)


def test_concurrent_interventions_do_not_leak(checkpoint):
    """Two threads' forward passes are held at layer 1 until both have reached it, so each one's
    intervention is set while the other's pass runs: each still gets exactly its own result."""
    lens = diffllama.load(checkpoint("diffllama-gqa"))
    trace = lens.trace(TEXT)
    requests = {"lambda": core.Intervention(lambdas=LambdaOverride({0: -1.0, 1: 0.0}, trace.lambdas)),
                "heads": core.Intervention(heads=[core.HeadEdit(0, 2, "zero"), core.HeadEdit(2, 1, "mean")]),
                "none": None}
    alone = {name: _logits(lens, intervention) for name, intervention in requests.items()}
    barrier = threading.Barrier(len(requests), timeout=60)

    def meet(module, args):
        barrier.wait()  # returns None: the layer's input stays as it is

    hook = lens.model.base_model.layers[1].register_forward_pre_hook(meet)
    together, errors = {}, []

    def request(name):
        try:
            together[name] = _logits(lens, requests[name])
        except Exception as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=request, args=(name,)) for name in requests]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        hook.remove()
    assert not errors
    for name in requests:
        torch.testing.assert_close(together[name], alone[name], atol=0, rtol=0)
    assert not torch.allclose(alone["lambda"], alone["none"]) and not torch.allclose(alone["heads"], alone["none"])


def test_bad_input_is_refused_with_the_parameter_named(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa"))
    trace = lens.trace(TEXT)
    with pytest.raises(ValueError, match="mode 'half' is not an ablation; choose one of zero, mean"):
        interventions.ablate_heads(lens, trace, [(0, 0)], "half")
    with pytest.raises(ValueError, match="head 4 is out of range: this model has heads 0..3"):
        interventions.ablate_heads(lens, trace, [(0, 4)])
    with pytest.raises(ValueError, match="layer 3 is out of range"):
        interventions.set_lambdas(lens, trace, {3: 0.5})
    with pytest.raises(ValueError, match="either λ values per layer or a scale"):
        interventions.set_lambdas(lens, trace, {0: 0.5}, 2.0)
    with pytest.raises(ValueError, match="λ for layer 0 must be a finite number"):
        interventions.set_lambdas(lens, trace, {0: float("nan")})
    llama = diffllama.load(checkpoint("llama-gqa"))
    with pytest.raises(ValueError, match="λ ablation needs a DiffLlama; this is a llama model"):
        interventions.set_lambdas(llama, llama.trace(TEXT), scale=0.5)
    classifier = diffllama.load(checkpoint("diffllama-gqa", "classification"))
    with pytest.raises(ValueError, match="the logit lens reads the next-token prediction: load a language model"):
        interventions.logit_lens(classifier, classifier.trace(TEXT))
    assert interventions.answer_id(lens, "What is the magic number of", "Lyon") == lens.tokenizer(" Lyon")["input_ids"][1]
    assert interventions.answer_id(lens, TEXT, " ") is None


def test_head_ablation_on_a_classifier_reads_the_label(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa", "classification"))
    result = interventions.ablate_heads(lens, lens.classify("not bad at all").trace, [(0, 0), (2, 3)])
    assert result.answer is None and result.outputs.tokens == ["label"]


def test_the_tab_endpoints_and_tools_answer_through_the_api(app_url):
    """The tools return the backend's numbers as JSON (NaN as null); the tab's views draw A and B side by side."""
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    lens = diffllama.registry.ModelCache().get("diffllama-lm", "generation")
    expected = interventions.logit_lens(lens, lens.trace(TEXT), interventions.answer_id(lens, TEXT, "Paris"))
    got = client.predict(TEXT, "diffllama-lm", "Paris", api_name="/logit_lens")
    assert got["rank"] == expected.rank and got["probability"] == pytest.approx(expected.probability, abs=1e-6)
    same = client.predict(TEXT, TEXT, "diffllama-lm", "", "", api_name="/patch_activations")
    assert same["heads"][0][0] is None and "nothing to recover" in same["note"]
    lambdas = client.predict(TEXT, "diffllama-lm", [[0, -1.0], [2, 0.0]], None, "", api_name="/set_lambdas")
    assert lambdas["description"].startswith("layer 0: λ") and lambdas["answer"]["rank"][0] == 1
    note, map_a, map_b = client.predict(TEXT, "", "diffllama-lm", "llama-lm", "0.1", "zero", api_name="/interventions_heads")
    assert "**Model A**" in note and "**Model B**" in note and map_a["type"] == map_b["type"] == "plotly"
    with pytest.raises(Exception, match="heads: write each as layer.head"):
        client.predict(TEXT, "", "diffllama-lm", "llama-lm", "1-2", "zero", api_name="/interventions_heads")


def test_retrieval_pair_asks_for_another_needle_of_the_same_token_length():
    from transformers import AutoTokenizer

    from diffllama.interventions.patching import retrieval_pair
    from diffllama.study import retrieval_examples

    example = retrieval_examples(1, fillers=(4,), seed=1)[0]
    directory = str(Path(diffllama.__file__).parents[1] / "assets" / "models" / "tokenizer")  # the bundled family's
    clean, corrupted, answer, foil = retrieval_pair(example.context, example.question, example.lead_in, directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert clean.endswith(example.lead_in) and answer == " " + example.answer and foil != answer
    assert len(tokenizer(clean)["input_ids"]) == len(tokenizer(corrupted)["input_ids"]) and corrupted != clean
    assert f"is{foil}." in example.context
