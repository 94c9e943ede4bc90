"""The counter command's defaults, as typed configs: with them `python train.py --lstm_size=24` exports
a counter its run checked right at every step of sequences of a million steps whose sums reach
±1,000,000, in about a minute on 2 cores (docs/experiments.md, "The default counts to 1,000,000").
`train.py`'s flags take their defaults from them; the notebook's setup is
`experiments/reference_notebook.flags`.
"""

from diy_lstm.model import ModelConfig
from diy_lstm.training.config import RestartConfig, RunConfig, TrainingConfig
from tasks.counter import data_generator
from tasks.counter.task import CounterData

DEFAULT_DATA = CounterData(
    min_length=20,
    max_length=20,
    max_sequences_per_length=16_384,
    train_fraction=0.9,
    check_length=10_000,  # every step of fresh sequences this long right is the goal...
    check_sequences=1000,
    long_check_length=1_000_000,  # ...and of runs, drifts and patterns whose sums reach ±1,000,000
    readout_fit_length=1000,  # and the long check's shapes at a tenth of its length
)
DEFAULT_MODEL = ModelConfig(
    input_size=data_generator.NUM_FEATURES,
    units=24,
    readout="cell",  # c is unbounded, so sums far beyond the training lengths stay representable
    recurrent_activation="hard_sigmoid",  # a gate can be exactly open or exactly shut: no leak
    forget_bias=3.0,  # the hard sigmoid's 1 from the start: nothing is forgotten
)
DEFAULT_TRAINING = TrainingConfig(
    epochs=80,
    learning_rate=0.08,
    learning_rate_decay=0.05,
    preactivation_noise=1.5,  # gates decided by a margin; what carries the count past length 20
    noise_distribution="table",  # the same Gaussian values, read from a table: a tenth of the cost
    stop_at_goal=True,
)
DEFAULT_RUN = RunConfig(
    validate_every=20,  # the validation split's loss and error every 20th step (0.013 s)...
    eval_every=1,  # ...every metric of both splits every epoch (a fraction of a second)...
    check_every=5,  # ...the check every 5th (a few seconds)
    image_every=2,  # gate heat maps every 2nd epoch and at the goal (0.15 s)...
    histogram_every=5,  # ...histograms of the whole training split's gradients every 5th (0.5 s)
    checkpoint_every=20,
    restart=RestartConfig(epoch=20),  # a try not exact on the check split by then starts over as the next seed
)
