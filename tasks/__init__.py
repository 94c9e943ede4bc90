"""The tasks the hand-built LSTM is trained on, each whole in its own package (data, loss, metrics,
serving module, command lines, evaluation): `tasks.counter` (+-0I running sums) and `tasks.text`
(a character-level language model). They import the library (`diy_lstm`); it never imports them."""
