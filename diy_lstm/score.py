"""`python -m diy_lstm.score` still works: the counter's scorer moved to `python -m tasks.counter.score`
(a task's command line is the task's). This forwards to it unchanged."""

import runpy

if __name__ == "__main__":
    runpy.run_module("tasks.counter.score", run_name="__main__", alter_sys=True)
