"""`python -m diy_lstm.generate` still works: the text model's writer moved to `python -m
tasks.text.generate` (a task's command line is the task's). This forwards to it unchanged."""

import runpy

if __name__ == "__main__":
    runpy.run_module("tasks.text.generate", run_name="__main__", alter_sys=True)
