"""Train the hand-built LSTM as a character-level language model, then write with it.

    python train_text.py --corpus=shakespeare
    python generate.py --model_dir=logs/RUN/saved_model --prompt="To be" --num_chars=300

The command line is `tasks/text/train.py`; the task is `tasks/text/`; the run is the library's.
`python train_text.py --helpfull` lists every flag.
"""

from diy_lstm.cli import quiet

quiet.import_tensorflow()  # first: TensorFlow's start-up lines stay off the terminal

from diy_lstm.cli.main import run_main  # noqa: E402
from tasks.text.train import main  # noqa: E402

if __name__ == "__main__":
    run_main(main)
