"""Write an exported model as LiteRT (TensorFlow Lite) files for a device, checked against it.

    python export_litert.py --model_dir=logs/RUN/saved_model

The command line is `tasks/export_litert.py`. `python export_litert.py --helpfull` lists every flag.
"""

from diy_lstm.cli import quiet

quiet.import_tensorflow()  # first: TensorFlow's start-up lines stay off the terminal

from diy_lstm.cli.main import run_main  # noqa: E402
from tasks.export_litert import main  # noqa: E402

if __name__ == "__main__":
    run_main(main)
