"""SavedModels: written atomically and only over our own (`export.py`), with raw strings turned into
ids and checked inside the graph (`strings.py`). What a model holds is its task's (`tasks/*/serving.py`)."""
