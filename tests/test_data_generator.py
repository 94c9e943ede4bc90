"""The +-0I task: sums worked out by hand, encoding, enumeration, splits and batches."""

import numpy as np
import pytest

from tasks.counter import data_generator as dg


@pytest.mark.parametrize(
    "sequence, expected",
    [
        ("0+I000", [0, 1, 1, 1, 1, 1]),
        ("I0-", [0, 0, 1]),
        ("-I--", [-1, -1, 0, 1]),
        ("+", [1]),
        ("-", [-1]),
        ("0", [0]),
        ("I", [0]),
        ("I+I+", [0, -1, -1, 0]),  # a second I inverts back
        ("II+", [0, 0, 1]),
        ("I+II+", [0, -1, -1, -1, -2]),  # three I: inverted again
        ("++-+", [1, 2, 1, 2]),
        ("I-I-I-", [0, 1, 1, 0, 0, 1]),
    ],
)
def test_running_sum_hand_worked(sequence, expected):
    assert dg.running_sum(sequence).tolist() == expected
    assert dg.final_sum(sequence) == expected[-1]


def test_encoding_is_the_documented_table():
    assert dg.encode_sequence("0+-I").tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert dg.encode_sequence("++").dtype == np.float32


def test_decode_inverts_encode_for_all_sequences_of_length_4():
    for sequence in dg.all_sequences(4):
        assert dg.decode_sequence(dg.encode_sequence(sequence)) == sequence


def test_reference_notebook_aliases():
    assert dg.getSequences is dg.get_sequences
    assert dg.decodeSequence(dg.encodeSequence("+-0I")) == "+-0I"


def test_all_sequences_of_length_6_are_4096_distinct():
    sequences = dg.get_sequences(6, seed=0)
    assert len(sequences) == 4096 == len(set(sequences))
    assert sorted(sequences) == sorted(dg.all_sequences(6))


def test_shuffle_is_fixed_by_seed():
    assert dg.get_sequences(6, seed=1) == dg.get_sequences(6, seed=1)
    assert dg.get_sequences(6, seed=1) != dg.get_sequences(6, seed=2)


def test_long_lengths_are_sampled():
    sequences = dg.get_sequences(30, seed=0, max_count=500)
    assert len(sequences) == 500 and all(len(s) == 30 for s in sequences)
    assert sequences == dg.get_sequences(30, seed=0, max_count=500)


def test_reference_split_is_1024_and_3072():
    train, test = dg.make_splits(6, 6, 0.25, seed=0)
    assert (len(train), len(test)) == (1024, 3072)
    assert not set(train.sequences) & set(test.sequences)


def test_examples_hold_running_sums_and_padding():
    examples = dg.Examples.from_sequences(["+-I", "++"])
    assert examples.inputs.shape == (2, 3, 3)
    assert examples.lengths.tolist() == [3, 2]
    assert examples.running_sums.tolist() == [[1, 0, 0], [1, 2, 0]]
    assert examples.final_sums.tolist() == [0, 2]


def test_mixed_lengths_split_every_length():
    train, test = dg.make_splits(2, 4, 0.5, seed=0)
    assert set(train.lengths.tolist()) == set(test.lengths.tolist()) == {2, 3, 4}


@pytest.mark.parametrize(
    "bad, message",
    [
        ("+x-", r"'x' \(U\+0078\) at position 2"),
        ("", "empty"),
        ("+ ", r"' ' \(U\+0020\) at position 2"),
        ("é", r"U\+00E9"),
        ("+\n", r"U\+000A"),
    ],
)
def test_bad_sequences_name_character_and_position(bad, message):
    with pytest.raises(dg.SequenceError, match=message):
        dg.running_sum(bad)


def test_decode_rejects_unknown_rows():
    with pytest.raises(dg.SequenceError, match="row 1"):
        dg.decode_sequence(np.array([[1, 0, 0], [1, 1, 0]]))


def test_batch_plan_covers_every_example_once_per_epoch():
    lengths = np.array([3] * 10 + [5] * 7)
    plan = dg.batch_plan(lengths, batch_size=4, seed=0, epoch=2)
    flat = np.concatenate(plan)
    assert sorted(flat.tolist()) == list(range(17))
    assert all(len(set(lengths[b])) == 1 for b in plan)  # one length per batch
    assert [b.tolist() for b in plan] == [b.tolist() for b in dg.batch_plan(lengths, 4, 0, 2)]
    assert [b.tolist() for b in plan] != [b.tolist() for b in dg.batch_plan(lengths, 4, 0, 3)]


def test_training_batches_trim_padding_and_follow_each_epochs_plan():
    examples = dg.Examples.from_sequences(["+-I0", "++", "0-", "I+I+"])
    batches = list(dg.training_batches(examples, batch_size=2, seed=0, epochs=range(3, 5)))
    assert len(batches) == 2 * dg.steps_per_epoch(examples.lengths, 2) == 4  # lengths 2, 4: one batch each
    planned = [sorted(indices) for epoch in (3, 4) for indices in dg.batch_plan(examples.lengths, 2, 0, epoch)]
    seen = [
        sorted(
            examples.sequences.index(dg.decode_sequence(row[:length]))
            for row, length in zip(inputs.numpy(), lengths.numpy())
        )
        for inputs, _, lengths in batches
    ]
    assert seen == planned
    for inputs, sums, lengths in batches:
        assert inputs.shape[1] == int(max(lengths))
        assert sums.shape == inputs.shape[:2]
        for row, length in zip(inputs.numpy(), lengths.numpy()):
            assert dg.decode_sequence(row[:length]) in examples.sequences


def test_training_batches_run_without_the_autotuner():
    """With tf.data's autotuner on, the last batch is followed by a wait for the tuner's next
    wake-up (seconds, growing with the run); the pipeline tunes nothing, so it is off."""
    examples = dg.Examples.from_sequences(["+-I0", "++"])
    assert dg.training_batches(examples, batch_size=1, seed=0, epochs=range(1)).options().autotune.enabled is False
