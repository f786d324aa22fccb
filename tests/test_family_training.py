"""Each training stage of the family reduces its loss on a micro configuration, the data recipe is
deterministic, and the family is matched in size."""

import random

import pytest
import torch
import transformers

from diffllama.family import corpus, features, train

MICRO = train.ModelShape(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, intermediate_size=64, max_position_embeddings=256)


@pytest.fixture(scope="module")
def tokenizer():
    return features.train_tokenizer(features.tokenizer_texts(0, 500), MICRO.vocab_size)


def micro_lm(arch, tokenizer):
    torch.manual_seed(0)
    return getattr(transformers, train.ARCHS[arch] + "ForCausalLM")(train.lm_config(arch, MICRO, tokenizer))


def test_curriculum_documents_are_deterministic_and_grow_harder():
    easy = train.lm_documents(random.Random("x"), 300, "lm", 0.0)
    assert easy == train.lm_documents(random.Random("x"), 300, "lm", 0.0)
    hard = train.lm_documents(random.Random("x"), 300, "lm", 1.0)
    needles = lambda docs: sum(text.count("The magic number of") for text, _ in docs)  # noqa: E731
    assert needles(hard) > 1.5 * needles(easy)
    assert sum(len(t) for t, _ in hard) > 3 * sum(len(t) for t, _ in easy)  # longer haystacks
    for text, answer in hard:
        if answer is not None:  # the weighted answer is the one in the fact restated after the question
            assert answer.start > text.index("?") and text.rindex(text[answer.start:answer.end]) == answer.start


def test_packed_rows_keep_documents_whole_and_weight_answers(tokenizer):
    documents = train.lm_documents(random.Random("y"), 40, "lm", 1.0)
    ids, weights = train.pack_rows(train.encode_documents(tokenizer, documents, 5.0), 256, tokenizer.pad_token_id)
    assert ids.shape[1] == 256 and ids.shape == weights.shape
    assert int((weights == 5.0).sum()) > 0 and bool(((ids == tokenizer.pad_token_id) == (weights == 0)).all())
    assert int((ids == tokenizer.bos_token_id).sum()) == len(documents)  # no document lost or split


def test_induction_rows_repeat_each_span_and_weight_only_the_repeat():
    ids, weights = train.induction_rows(300, train.Stage(steps=2, seq_len=128, batch=2, lr=0.0), seed=0)
    for row, weight in zip(ids, weights):
        repeat = weight.nonzero().flatten()
        assert len(repeat) > 16
        first, span = int(repeat[0]), 0
        while first + span < len(weight) and weight[first + span] == 1:
            span += 1
        assert torch.equal(row[first - span:first], row[first:first + span])


@pytest.mark.parametrize("arch", list(train.ARCHS))
@pytest.mark.parametrize("stage", ["induction", "lm"])
def test_language_model_stages_reduce_the_loss(arch, stage, tokenizer):
    spec = train.Stage(steps=25, seq_len=128, batch=8, lr=3e-3)
    # induction spans over a 20-token alphabet: a micro model learns that much in 25 steps
    rows = (train.induction_rows(24, spec, seed=0) if stage == "induction" else
            train.pack_rows(train.encode_documents(tokenizer, train.lm_documents(random.Random(0), 400, "lm", 0.3), 5.0),
                            128, tokenizer.pad_token_id))
    model = micro_lm(arch, tokenizer)
    record = train.train_loop(model, train.row_batches(*rows, spec.batch, "cpu"), spec.steps, spec.lr,
                              train.weighted_lm_loss, train.Recipe(warmup=0.1), f"{arch}-{stage}", log_every=10)
    assert record["final_loss"] < 0.9 * record["first_loss"]
    if arch == "diffllama":  # λ per layer at every log step, from the parameters as the attention forms them
        steps, lambdas = zip(*record["lambdas"])
        assert steps == (0, 1, 10, 20, 25) and all(len(layer) == MICRO.num_hidden_layers for layer in lambdas)
        assert lambdas[-1] == train.layer_lambdas(model) and lambdas[0] != lambdas[-1]
    else:
        assert "lambdas" not in record


@pytest.mark.parametrize("task,steps,batch", [("cls", 150, 8), ("tag", 30, 8), ("qa", 30, 2)])  # sentiment needs the words;
# QA contexts run to ≈ 550 tokens, so its batches stay small
def test_head_fine_tuning_reduces_the_loss(task, steps, batch, tokenizer):
    lm = micro_lm("diffllama", tokenizer)
    model = train.head_model("diffllama", task, lm)
    assert torch.equal(model.base_model.embed_tokens.weight, lm.base_model.embed_tokens.weight)  # body copied
    batches = train.head_batches(tokenizer, features.HEADS[task], corpus.TRAIN_SEED, steps, batch, "cpu")
    record = train.train_loop(model, batches, steps, 3e-3, lambda m, b: m(**b).loss, train.Recipe(warmup=0.1), task, log_every=1000,
                              probe=lambda m: 0.0, probe_every=10)
    assert record["final_loss"] < 0.9 * record["first_loss"] and record["kept_step"] == steps


def test_lambda_vectors_learn_slower_and_without_weight_decay(tokenizer):
    recipe = train.Recipe(lambda_lr_scale=0.05, weight_decay=0.01)
    model = micro_lm("diffllama", tokenizer)
    decay, no_decay, lambdas = train.parameter_groups(model, 2e-3, recipe)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)].rsplit(".", 1)[-1] for p in lambdas["params"]) == sorted(train.LAMBDA_VECTORS * MICRO.num_hidden_layers)
    assert lambdas["lr"] == 2e-3 * 0.05 and lambdas["weight_decay"] == 0.0 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.01
    assert len(decay["params"]) + len(no_decay["params"]) + len(lambdas["params"]) == len(list(model.parameters()))


def test_family_parameter_counts_match_within_two_percent(tokenizer):
    shape = train.ModelShape()
    counts = [train.count_parameters(train.lm_config(arch, shape, tokenizer)) for arch in train.ARCHS]
    assert max(counts) / min(counts) < 1.02


def test_model_card_shows_lambda_per_layer_and_the_layers_outside_zero_one():
    from diffllama.family import evaluate
    training = {"stages": {"lm": {"lambdas": [(0, [0.2, 0.35]), (100, [0.3, 0.5]), (200, [-0.1, 1.2])]}}}
    table = evaluate.lambda_table(training)
    assert table[2].startswith("| stage | step | λ0 | λ1 |")
    assert table[-2] == "| lm | 200 | -0.100 | +1.200 | 2 |" and table[4] == "| lm | 0 | +0.200 | +0.350 | 0 |"
    assert evaluate.lambda_table({"stage": "cls"}) == []  # Llama and Persimmon record no λ


def test_a_run_can_stop_after_any_stage_and_the_next_resumes_it(tmp_path, tokenizer, monkeypatch):
    """A GPU lent for ≈ 10 minutes trains one stage per run: ``--until`` stops there, ``--resume`` goes on."""
    trained = []
    monkeypatch.setattr(train, "train_loop", lambda model, *a, **k: trained.append(a[5]) or {"steps": 0})
    monkeypatch.setattr(train, "load_rows", lambda work, stage: (torch.zeros(4, 8, dtype=torch.long), torch.ones(4, 8)))
    monkeypatch.setattr(train, "fine_tune", lambda arch, task, lm, tok, recipe: (trained.append(task) or lm, {}))
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    run = lambda until: train.train_architecture("llama", tmp_path, tmp_path / "work", train.Recipe(), MICRO, "cpu",  # noqa: E731
                                                 resume=True, until=until)
    run("induction")
    assert trained == ["llama-induction"] and not (tmp_path / "llama-lm").exists()
    run("long")
    assert trained[1:] == ["llama-lm", "llama-long"] and (tmp_path / "llama-lm" / "training.json").exists()
    run("heads")
    assert trained[3:] == train.tasks_for("llama")


def test_distinct_bigrams_tell_a_loop_from_a_story():
    from diffllama.family import evaluate
    assert evaluate.distinct_bigrams([1, 2, 3, 4, 5]) == 1.0
    assert evaluate.distinct_bigrams([1, 2] * 10) == 2 / 19  # (1, 2) and (2, 1) over 19 bigrams
