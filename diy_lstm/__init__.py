"""diy_lstm: an LSTM built by hand in TensorFlow 2, and the training run that serves any task.

    cell.py        the gate variables and the one step function every path runs (`lstm_step`)
    rnn.py         the time loop over any length, with a hand-written backward pass
    model.py       stacked layers and a linear readout (`LSTMModel`, `ModelConfig`)
    reference.py   the same model in plain numpy, forward and backward
    config.py      typed settings of a run; task.py: what a task supplies; run.py: `run.train(settings, task)`
    training.py    the compiled training step; optimizer.py: Adam
    distribute.py  `--strategy`: replicas on local devices or worker processes, and who writes
    checkpoints.py, summaries.py, progress.py, lock.py   resume, TensorBoard, the progress line, one writer
    export.py      the scoring SavedModel; score.py: its command line
    generation.py  the generate/score SavedModel of a language model; generate.py: its command line
    cli.py, training_flags.py, quiet.py   what the command lines share
    keras_interop.py   weights to and from `tf.keras.layers.LSTM`

The library never imports a task: tasks (`counter_task.py`, `text_task.py`) import it.
"""
