"""The synthetic corpus is deterministic and its labels and spans agree with its text."""

import pytest

from diffllama import corpus
from diffllama.training import TAGS, bio_labels, qa_features, train_tokenizer


@pytest.mark.parametrize("kind", ["story", "retrieval", "review", "tagged"])
def test_generators_are_deterministic_by_seed(kind):
    assert corpus.generate(kind, 5, 20) == corpus.generate(kind, 5, 20)
    assert corpus.generate(kind, 5, 20) != corpus.generate(kind, 6, 20)


def test_held_out_split_differs_from_training():
    train = {r.context for r in corpus.generate("retrieval", corpus.TRAIN_SEED, 300)}
    held_out = {r.context for r in corpus.generate("retrieval", corpus.HELD_OUT_SEED, 300)}
    assert not train & held_out


def test_retrieval_answer_spans_point_at_the_asked_fact():
    for example in corpus.generate("retrieval", 0, 200):
        city = example.question.removeprefix("What is the magic number of ").removesuffix("?")
        assert f"The magic number of {city} is {example.answer_text}." in example.context
        assert example.answer_text.isdigit() and len(example.answer_text) == 4
        assert example.context.count(f"number of {city} is") == 1  # the other needles are other cities
        assert example.context.count("The magic number of") >= 2  # look-alike distractors present
        assert 0.0 <= example.depth <= 1.0


def test_review_labels_follow_the_opinion_and_its_negation():
    for example in corpus.generate("review", 0, 300):
        sentences = [s.rstrip(".") for s in example.text.split(". ")]
        opinion = next(s for s in sentences if s.split()[-1].rstrip(".") in corpus.POSITIVE + corpus.NEGATIVE)
        word = opinion.split()[-1].rstrip(".")
        negated = " was not " in opinion
        positive_word = word in corpus.POSITIVE
        assert example.label == ("positive" if positive_word != negated else "negative"), example.text
    labels = {r.label for r in corpus.generate("review", 0, 100)}
    assert labels == {"positive", "negative"}


def test_tagged_spans_cover_their_entities():
    vocab = {"PER": corpus.PEOPLE, "LOC": corpus.CITIES, "ORG": corpus.ORGS}
    for example in corpus.generate("tagged", 0, 300):
        assert example.entities
        for span in example.entities:
            text = example.text[span.start:span.end]
            if span.label in vocab:
                assert text in vocab[span.label]
            elif span.label == "NUM":
                assert text.isdigit()
            else:
                assert any(month in text for month in corpus.MONTHS)


def test_token_labels_and_qa_positions_agree_with_spans():
    texts = [s for s in corpus.generate("story", 0, 200)] + [r.context for r in corpus.generate("retrieval", 0, 100)]
    tokenizer = train_tokenizer(texts + [t.text for t in corpus.generate("tagged", 0, 200)], 512)
    for example in corpus.generate("tagged", 2, 50):
        features = bio_labels(tokenizer, example)
        offsets = tokenizer(example.text, return_offsets_mapping=True)["offset_mapping"]
        for label, (start, end) in zip(features["labels"], offsets):
            if label > 0 and TAGS[label].startswith("B-"):
                assert any(e.start == start and TAGS[label][2:] == e.label for e in example.entities)
    for example in corpus.generate("retrieval", 2, 50):
        features = qa_features(tokenizer, example)
        encoding = tokenizer(example.question, example.context, return_offsets_mapping=True)
        start = encoding["offset_mapping"][features["start_positions"]][0]
        end = encoding["offset_mapping"][features["end_positions"]][1]
        assert example.context[start:end].strip() == example.answer_text
