"""Train the hand-built LSTM on the +-0I running-sum task.

    python train.py --lstm_size=24
    python train.py --flagfile=experiments/reference_notebook.flags

The command line is `tasks/counter/train.py`; the task is `tasks/counter/`; the run is the library's
(`diy_lstm/training/run.py`). `python train.py --helpfull` lists every flag.
"""

from diy_lstm.cli import quiet

quiet.import_tensorflow()  # first: TensorFlow's start-up lines stay off the terminal

from diy_lstm.cli.main import run_main  # noqa: E402
from tasks.counter.train import main  # noqa: E402

if __name__ == "__main__":
    run_main(main)
