"""diy_lstm: an LSTM built by hand in TensorFlow 2.

    cell.py       the gate variables and one step of the math
    rnn.py        the time loop over any length, with a hand-written backward pass
    model.py      stacked layers and a linear readout
    reference.py  the same model in plain numpy, forward and backward
    training.py   losses, metrics, the compiled training step; optimizer.py: Adam
    export.py     the SavedModel that scores raw strings; score.py: its command line
"""
