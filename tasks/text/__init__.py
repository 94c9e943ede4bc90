"""The character-level language model: `text_data` (corpora, vocabulary, streams), `task` (loss,
metrics, the task of the training run), `serving` (the generate/score SavedModel), `train` and
`generate` (its command lines)."""
