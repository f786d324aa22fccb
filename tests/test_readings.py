"""The readings in every λ regime on hand-made rows (known answers), the contribution reading against
``Trace.contributions``, the query token's default, and the study's intervals against a direct computation."""

import math

import numpy as np
import pytest

import diffllama
from diffllama import analysis
from diffllama.analysis import measures
from diffllama.study.measure import retrieved
from diffllama.study.statistics import accuracy, bootstrap, paired, wilson

A1 = np.array([0.1, 0.2, 0.3, 0.2, 0.2])  # two softmax rows over keys 0..4; key 4 is the query itself
A2 = np.array([0.1, 0.4, 0.1, 0.2, 0.2])
CONTEXT = (0, 4)  # keys 0..3


def differential(lambda_: float) -> np.ndarray:
    return A1 - lambda_ * A2


@pytest.mark.parametrize("lambda_, answer, expected", [
    # λ < 0: the layer adds A2: D = [0.15, 0.4, 0.35, 0.3, 0.3], sum 1.5, no negative entry
    (-0.5, (1, 2), {"signed": (0.4, 0.8), "net": (0.4 / 1.5, 0.8 / 1.5), "absolute": (0.4 / 1.5, 0.8 / 1.5),
                    "adds": (0.4 / 1.5, 0.8 / 1.5), "subtracts": (0.0, 0.0), "normalised": (0.4 / 1.5, 0.8 / 1.5)}),
    # 0 < λ < 1: D = [0.05, 0.0, 0.25, 0.1, 0.1], sum 0.5
    (0.5, (2, 3), {"signed": (0.25, 0.15), "net": (0.5, 0.3), "absolute": (0.5, 0.3), "adds": (0.5, 0.3),
                   "subtracts": (0.0, 0.0), "normalised": (0.5, 0.3)}),
    # λ > 1: D = [−0.05, −0.4, 0.15, −0.1, −0.1], sum −0.5, |D| sums to 0.8: the layer subtracts the answer
    (1.5, (1, 2), {"signed": (-0.4, 0.0), "net": (-0.5, 0.0), "absolute": (0.5, 0.375), "adds": (0.0, 0.1875),
                   "subtracts": (0.5, 0.1875), "normalised": (math.nan, math.nan)}),
])
def test_readings_in_every_regime(lambda_, answer, expected):
    got = analysis.readings(differential(lambda_), answer, CONTEXT, lambda_)
    assert list(got) == list(analysis.READINGS) and analysis.READINGS[0] == "net"
    for reading, values in expected.items():
        np.testing.assert_allclose(got[reading], values, atol=1e-12, err_msg=reading)
    assert math.isnan(got["contribution"][0]) and math.isnan(got["projection"][0])  # no contributions given


def test_the_normalised_reading_would_flip_the_sign_where_lambda_exceeds_one():
    d = differential(1.5)
    signed = d[1]  # −0.4: the layer subtracts the answer's values
    assert signed / (1 - 1.5) == pytest.approx(0.8)  # ÷ (1 − λ) would call it 80 % attention to the answer
    got = analysis.readings(d, (1, 2), CONTEXT, 1.5)
    assert math.isnan(got["normalised"][0]) and got["net"][0] < 0 and got["subtracts"][0] > 0
    assert not measures.normalised_defined(1.5) and not measures.normalised_defined(1.02)
    assert measures.normalised_defined(0.85) and measures.normalised_defined(-1.4)
    near_one = analysis.readings(differential(1.02), (1, 2), CONTEXT, 1.02)  # rows sum to −0.02
    assert math.isnan(near_one["normalised"][0]) and abs(near_one["net"][0]) <= 1


def test_regimes_and_their_notes():
    assert [measures.regime(v) for v in (-1.37, 0.2, 0.87, 0.95, 1.03, 1.18)] == [
        "λ < 0", "0 < λ < 1", "0 < λ < 1", "λ ≈ 1", "λ ≈ 1", "λ > 1"]
    assert "adds A2" in measures.REGIME_NOTES["λ < 0"] and "negative" in measures.REGIME_NOTES["λ > 1"]
    assert set(measures.REGIME_NOTES) == set(measures.REGIMES)


def test_softmax_rows_and_contributions_on_hand_made_rows():
    got = analysis.readings(A1, (2, 3), CONTEXT, None, norms=[1.0, 2.0, 1.0, 0.0, 0.0],
                            projections=[0.5, -1.0, 1.5, 0.0, 0.0], output_norm=1.0)
    for reading in ("net", "absolute", "adds", "signed", "normalised"):  # a softmax row: all the same
        np.testing.assert_allclose(got[reading], (0.3, 0.5), atol=1e-12)
    assert got["subtracts"] == (0.0, 0.0)
    np.testing.assert_allclose(got["contribution"], (0.25, 0.75))  # ‖c‖ shares: 1 of 4, and 2 + 1 + 0 of 4
    np.testing.assert_allclose(got["projection"], (1.5, -0.5))  # along o: key 1 pushes against the output


@pytest.mark.parametrize("name", ["diffllama-gqa", "llama-gqa"])
def test_contribution_readings_equal_a_direct_computation_from_trace_contributions(checkpoint, name):
    text = "The magic number of Lyon is 4821. What is the magic number of Lyon?"
    trace = diffllama.load(checkpoint(name)).trace(text)
    reference = analysis.find_reference(text, "4821", 0, "gold answer")
    result = analysis.reference_allocation(trace, reference, (0, text.index("What") - 1))
    (a0, a1), (c0, c1), q = result.answer, result.context, result.query
    for layer in range(trace.num_layers):
        for head in range(trace.num_heads):
            made = trace.contributions(layer, head, rows=[q])
            norms, projections = made.norms[0].astype(float), made.projections[0].astype(float)
            assert result.answer_mass["contribution"][layer, head] == pytest.approx(norms[a0:a1].sum() / norms.sum(), abs=1e-9)
            assert result.noise_mass["contribution"][layer, head] == pytest.approx(
                (norms[c0:c1].sum() - norms[a0:a1].sum()) / norms.sum(), abs=1e-9)
            assert result.answer_mass["projection"][layer, head] == pytest.approx(
                projections[a0:a1].sum() / made.output_norms[0], abs=1e-6)


def test_the_query_is_the_token_before_the_answer_in_a_generated_continuation(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa"))
    prompt = "The magic number of Lyon is 4821. What is the magic number of Lyon?"
    reference = analysis.find_reference(prompt, "4821", 0, "gold answer")
    prompt_tokens = lens.trace(prompt).seq_len
    for continuation, rule in ((" It is 4821.", analysis.allocation.BEFORE_ANSWER),
                               (" 4821 it is.", analysis.allocation.BEFORE_ANSWER),
                               (" I do not know.", analysis.allocation.NOT_CONTINUED)):
        text = prompt + continuation
        trace = lens.trace(text)
        assert trace.input_ids[:prompt_tokens] == lens.trace(prompt).input_ids  # the prompt's tokens unchanged
        query, how = analysis.default_query(trace, reference, text, prompt_tokens)
        assert how == rule
        if rule == analysis.allocation.BEFORE_ANSWER:
            answer_at = text.index("4821", len(prompt))
            start, end = trace.offsets[query + 1]
            assert query + 1 >= prompt_tokens and start <= answer_at < end or start < answer_at + 4 <= end
            assert trace.offsets[query][1] <= answer_at  # the query has not seen the answer it predicts
        else:
            assert query == prompt_tokens - 1
        measured = analysis.reference_allocation(trace, reference, (0, 33), text=text, prompt_tokens=prompt_tokens)
        assert measured.query == query and measured.query_rule == rule
    # no continuation: the last prompt token; a chosen position is named so
    assert analysis.default_query(lens.trace(prompt), reference) == (prompt_tokens - 1, analysis.allocation.LAST_TOKEN)
    chosen = analysis.reference_allocation(lens.trace(prompt), reference, query=12)
    assert chosen.query == 12 and chosen.query_rule == "chosen"


def test_wilson_interval_against_a_direct_computation():
    z = 1.959963984540054
    for successes, n in ((0, 10), (7, 10), (20, 20), (1, 3), (130, 200)):
        p = successes / n
        centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        got = wilson(successes, n)
        assert got["low"] == pytest.approx(max(0.0, (centre - half) / (1 + z * z / n)))
        assert got["high"] == pytest.approx(min(1.0, (centre + half) / (1 + z * z / n)))
        assert got["mean"] == pytest.approx(p) and got["n"] == n
    assert wilson(20, 20)["low"] == pytest.approx(0.8389, abs=1e-4)  # every input found: not [1, 1]
    assert accuracy([1.0, 0.0, 1.0]) == wilson(2, 3)


def test_paired_bootstrap_against_a_direct_computation():
    rng = np.random.default_rng(5)
    a = rng.normal(0.3, 0.2, 40)
    b = a - 0.05 + rng.normal(0, 0.01, 40)  # B is A less 0.05 on every input, give or take
    got = paired(a, b, resamples=500, seed=3)
    differences = a - b
    draws = np.random.default_rng(3).integers(0, 40, (500, 40))
    means = differences[draws].mean(axis=1)
    assert got["mean"] == pytest.approx(differences.mean())
    assert (got["low"], got["high"]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert 0 < got["low"] < 0.05 < got["high"]  # paired: the inputs' own spread (0.2) cancels
    unpaired_width = bootstrap(a, 500)["high"] - bootstrap(a, 500)["low"]
    assert got["high"] - got["low"] < unpaired_width / 5
    assert bootstrap([0.1] * 4)["few"] and not bootstrap([0.1] * 10)["few"]
    assert paired([0.2, None], [0.1, 0.3])["mean"] is None  # a reading one input does not define
    with pytest.raises(ValueError, match="the same inputs"):
        paired([0.1], [0.1, 0.2])


def test_retrieval_is_the_continuations_first_number():
    assert retrieved(" 4821.", "4821") and retrieved(" It is 4821, I think", "4821")
    assert not retrieved(" 48213", "4821") and not retrieved(" 14821", "4821") and not retrieved(" 1234 then 4821", "4821")
    assert not retrieved("", "4821")
    assert retrieved(" Oslo.", "Oslo") and not retrieved(" Oslon", "Oslo")


def test_generated_inputs_are_bounded_with_messages():
    from diffllama import limits
    from diffllama.study import retrieval_examples

    for arguments, message in (((0,), r"inputs: 0 is not allowed; give a whole number from 1 to 100,000"),
                               ((5, 0), "needles: 0 is not allowed"),
                               ((5, 4, (100000,)), "fillers: 100000 is not allowed; give a whole number from 0 to 2,000"),
                               ((5, 4, tuple(range(11))), "lengths: 11 is not allowed"),
                               ((5, 4, (3,), (0.0, 2.0)), r"depths: \[0.0, 2.0\] is not allowed"),
                               ((5, "many"), "needles: 'many' is not allowed"),
                               ((2.5,), "inputs: 2.5 is not allowed")):
        with pytest.raises(ValueError, match=message):
            retrieval_examples(*arguments)
    with limits.time_limit(0), pytest.raises(limits.TimeLimitError):  # generation stops at the request's limit
        retrieval_examples(5, 2, (3,))
    assert len(retrieval_examples(5, 2, (3,))) == 5


def test_paired_accuracy_is_newcombes_interval():
    from diffllama.study.statistics import paired_accuracy

    # 50 inputs: both right 36, only A 12, only B 2, neither 0
    pairs = [(1.0, 1.0)] * 36 + [(1.0, 0.0)] * 12 + [(0.0, 1.0)] * 2
    got = paired_accuracy(pairs)
    (l1, u1), (l2, u2) = ((w["low"], w["high"]) for w in (wilson(48, 50), wilson(38, 50)))
    p1, p2 = 48 / 50, 38 / 50
    phi = (36 * 0 - 12 * 2) / math.sqrt(48 * 2 * 38 * 12)
    low = p1 - p2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    high = p1 - p2 + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    assert (got["mean"], got["low"], got["high"], got["n"]) == pytest.approx((0.2, low, high, 50))
    assert 0 < got["low"] < 0.2 < got["high"]
    same = paired_accuracy([(1.0, 1.0)] * 200)  # both found every answer: not [0, 0]
    assert same["mean"] == 0 and same["low"] == pytest.approx(-(1 - wilson(200, 200)["low"])) and same["high"] > 0
