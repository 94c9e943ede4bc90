"""The +-0I counter: `data_generator` (sequences, encoding, splits, batches), `task` (loss, metrics,
the task of the training run), `serving` (the SavedModel), `train`, `score` and `evaluate` (its
command lines; `generalization` scores long sequences for `evaluate`)."""
