"""Write text with an exported language model, streaming it as it comes.

    python generate.py --model_dir=logs/RUN/saved_model --prompt="To be" --num_chars=300

The command line is `tasks/text/generate.py`. `python generate.py --helpfull` lists every flag.
"""

from diy_lstm.cli import quiet

quiet.import_tensorflow()  # first: TensorFlow's start-up lines stay off the terminal

from tasks.text.generate import run  # noqa: E402

if __name__ == "__main__":
    run()
