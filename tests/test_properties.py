"""Property-based tests (hypothesis) of the task's arithmetic and of the scoring path."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diy_lstm import reference
from diy_lstm.model import LSTMModel, ModelConfig
from tasks.counter import data_generator as dg
from tasks.counter.serving import SequenceScorer

valid = st.text(alphabet=dg.ALPHABET, min_size=1, max_size=40)
mixed = st.text(alphabet=dg.ALPHABET + "x 1é\t\n+-", min_size=0, max_size=12)


def brute_force_sum(sequence):
    """The task's definition, read literally: each + / - counts +-1, inverted after an odd number of I."""
    return sum((1 if c == "+" else -1) * (-1) ** sequence[:i].count("I") for i, c in enumerate(sequence) if c in "+-")


@given(valid)
def test_decode_inverts_encode(sequence):
    assert dg.decode_sequence(dg.encode_sequence(sequence)) == sequence


@given(valid)
def test_final_sum_matches_the_definition(sequence):
    assert dg.final_sum(sequence) == brute_force_sum(sequence)


@given(valid, valid)
def test_running_sum_of_a_concatenation(first, second):
    """After `first`, `second` counts with the sign that first's I's leave behind."""
    sign = (-1) ** first.count("I")
    expected = np.concatenate([dg.running_sum(first), dg.final_sum(first) + sign * dg.running_sum(second)])
    np.testing.assert_array_equal(dg.running_sum(first + second), expected)


@given(valid)
def test_swapping_plus_and_minus_negates(sequence):
    swapped = sequence.translate(str.maketrans("+-", "-+"))
    np.testing.assert_array_equal(dg.running_sum(swapped), -dg.running_sum(sequence))


@given(valid)
def test_running_sum_moves_by_at_most_one(sequence):
    steps = np.diff(np.concatenate([[0], dg.running_sum(sequence)]))
    assert set(steps.tolist()) <= {-1, 0, 1}


MODEL = LSTMModel(ModelConfig(input_size=3, units=5, readout="cell", seed=11))
SCORER = SequenceScorer(MODEL, dg.ENCODING)
PARAMS = reference.params_from_model(MODEL)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mixed, min_size=1, max_size=4))
def test_scoring_path_scores_valid_batches_and_names_the_first_bad_character(batch):
    problems = []
    for index, sequence in enumerate(batch):
        try:
            dg.check_sequence(sequence)
        except dg.SequenceError:
            problems.append(index)
    if not problems:
        outputs = SCORER.score_strings(tf.constant(batch))
        for index, sequence in enumerate(batch):
            expected, _ = reference.forward(dg.encode_sequence(sequence)[None], PARAMS, readout="cell")
            assert abs(float(outputs["final_prediction"][index]) - expected[0, -1, 0]) <= 1e-5
        return
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        SCORER.score_strings(tf.constant(batch))
    empty = [i for i, s in enumerate(batch) if s == ""]
    if empty:
        assert f"sequences[{empty[0]}] is empty" in error.value.message
        return
    flat = [(i, p, c) for i, s in enumerate(batch) for p, c in enumerate(s, 1) if c not in dg.ENCODING]
    index, position, character = flat[0]
    assert (
        f"unknown character U+{ord(character):04X} at position {position} of sequences[{index}]" in error.value.message
    )
