"""The family's generated data is deterministic, and its labels and spans agree with its text."""

import pytest

from diffllama.family import corpus, features


@pytest.mark.parametrize("kind", ["story", "retrieval", "fact_qa", "qa", "review", "tagged"])
def test_generators_are_deterministic_by_seed(kind):
    assert corpus.generate(kind, 5, 20) == corpus.generate(kind, 5, 20)
    assert corpus.generate(kind, 5, 20) != corpus.generate(kind, 6, 20)


def test_held_out_and_probe_splits_differ_from_training():
    contexts = {seed: {r.context for r in corpus.generate("retrieval", seed, 300)}
                for seed in (corpus.TRAIN_SEED, corpus.HELD_OUT_SEED, corpus.PROBE_SEED)}
    assert not contexts[corpus.TRAIN_SEED] & contexts[corpus.HELD_OUT_SEED]
    assert not contexts[corpus.TRAIN_SEED] & contexts[corpus.PROBE_SEED]


@pytest.mark.parametrize("needles,fillers,lookalikes", [(1, 0, 0), (4, 30, 2), (6, 200, 1)])
def test_retrieval_spans_point_at_the_asked_fact_and_only_it(needles, fillers, lookalikes):
    for example in corpus.generate("retrieval", 0, 40, needles=needles, fillers=fillers, lookalikes=lookalikes):
        city = example.question.removeprefix("What is the magic number of ").removesuffix("?")
        assert example.fact_text == f"The magic number of {city} is {example.answer_text}."
        assert example.answer_text.isdigit() and len(example.answer_text) == 4
        assert example.context.count(f"The magic number of {city} ") == 1  # other needles name other cities
        assert example.context.count("The magic number of") == needles
        assert sum(example.context.count(f"The {key} of {city} is") for key in corpus.LOOKALIKE_KEYS) == lookalikes
        assert example.context.count(example.answer_text) == 1  # no distractor repeats the answer
        assert corpus.lead_in(example) == f"The magic number of {city} is"
        assert corpus.retrieval_prompt(example).endswith(f"{example.question} The magic number of {city} is")
        assert corpus.retrieval_prompt(example, with_lead_in=False).endswith(example.question)


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_retrieval_places_the_answer_at_the_asked_depth(depth):
    for example in corpus.generate("retrieval", 0, 20, fillers=40, depth=depth):
        assert example.depth == pytest.approx(depth, abs=0.02)


def test_reviews_have_three_balanced_classes_and_mixed_reviews_judge_two_aspects():
    reviews = corpus.generate("review", 0, 600)
    counts = {label: sum(r.label == label for r in reviews) for label in corpus.SENTIMENTS}
    assert min(counts.values()) > 150
    for review in reviews:
        judged = sum(aspect in review.text.lower() for aspect in corpus.ASPECTS)
        if review.label == "mixed":
            assert judged >= 2, review.text


def test_tagged_spans_cover_their_entities_including_non_ascii_names():
    vocab = {"LOC": corpus.CITIES, "ORG": corpus.ORGS}
    examples = corpus.generate("tagged", 0, 400)
    for example in examples:
        assert example.entities
        for span in example.entities:
            text = example.text[span.start:span.end]
            if span.label in vocab:
                assert text in vocab[span.label]
            elif span.label == "PER":
                assert text.split()[0] in corpus.FIRST_NAMES
            elif span.label == "NUM":
                assert text.isdigit()
            else:
                assert any(month in text for month in corpus.MONTHS)
    assert sum(not example.text[s.start:s.end].isascii() for example in examples for s in example.entities) > 40


@pytest.fixture(scope="module")
def tokenizer():
    return features.train_tokenizer(features.tokenizer_texts(0, 1500), 600)


def test_bio_labels_begin_each_entity_once_even_on_multibyte_characters(tokenizer):
    for example in corpus.generate("tagged", 2, 200):
        encoding = tokenizer(example.text, return_offsets_mapping=True)
        labels = features.tagging(tokenizer, example)["labels"]
        for entity in example.entities:
            inside = [features.TAGS[l] for l, (a, b) in zip(labels, encoding["offset_mapping"])
                      if l > 0 and entity.start <= a < entity.end]
            assert inside[0] == f"B-{entity.label}" and inside[1:] == [f"I-{entity.label}"] * (len(inside) - 1), example.text


def test_qa_positions_cover_the_answer(tokenizer):
    for example in corpus.generate("qa", 2, 100):
        item = features.question_answering(tokenizer, example)
        encoding = tokenizer(example.question, example.context, return_offsets_mapping=True)
        start = encoding["offset_mapping"][item["start_positions"]][0]
        end = encoding["offset_mapping"][item["end_positions"]][1]
        assert example.context[start:end].strip() == example.answer_text
