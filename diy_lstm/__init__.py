"""diy_lstm: an LSTM built by hand in TensorFlow 2, and the training run that serves any task.

The LSTM:
    cell.py            the parameters by name (`LSTMCell`), the step every path runs (`lstm_step`) and its
                       backward step (`lstm_step_backward`)
    rnn.py             the time loop over any length, forwards and backwards, and its speed `Schedule`
    model.py           stacked layers and a linear readout (`LSTMModel`, `ModelConfig`)
    readout.py         the readout refitted by least squares, every LSTM weight held fixed
    reference.py       the same model in plain numpy, forward and backward
    keras_interop.py   weights to and from `tf.keras.layers.LSTM`

Around it:
    training/          the run any task plugs into (`training.run.train(settings, task)`)
    serving/           SavedModels: atomic export, raw strings checked in the graph
    cli/               what the command lines share: a quiet import, one error path, bounded flag files
    files.py           what may be read (regular files, up to a cap) and touched (only what a run made)
    errors.py          the first line of an error, as every one-line report shows it

The library never imports a task: tasks (`tasks.counter`, `tasks.text`) import it.
"""
