"""The +-0I counter's data, under the reference notebook's module name: `from data_generator import
get_sequences` (or `getSequences`) works as it did there. The code is `tasks/counter/data_generator.py`."""

from tasks.counter.data_generator import *  # noqa: F401,F403
