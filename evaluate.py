"""How well an exported counter counts on fresh sequences of many lengths: `python evaluate.py
--model_dir=logs/RUN/saved_model` (the command line is `tasks/counter/evaluate.py`)."""

from diy_lstm.cli import quiet

quiet.import_tensorflow()  # first: TensorFlow's start-up lines stay off the terminal

from diy_lstm.cli.main import run_main  # noqa: E402
from tasks.counter.evaluate import main  # noqa: E402

if __name__ == "__main__":
    run_main(main)
