"""What the command lines share: a quiet TensorFlow import (`quiet.py`), one error path with one
table of exit codes (`errors.py`), flag parsing and the training driver (`main.py`), bounded flag
files (`flagfiles.py`). Importing this package imports nothing heavy."""
