"""Score sequences with an exported counter SavedModel.

    python score.py --model_dir=logs/RUN/saved_model "+-I0" "++0" -I--

The command line is `tasks/counter/score.py`. `python score.py --helpfull` lists every flag.
"""

from diy_lstm.cli import quiet

quiet.import_tensorflow()  # first: TensorFlow's start-up lines stay off the terminal

from tasks.counter.score import run  # noqa: E402

if __name__ == "__main__":
    run()
