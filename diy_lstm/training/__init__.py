"""The training machinery any task plugs into: `run.train(settings, task)`.

run.py         the run: checks before writing, the run directory, resume, restarts, placement
build.py       one try's parts, built before it trains: model, Adam, checkpoint, step, outputs
loop.py        one try's epochs: the steps, then the end-of-epoch actions, each at its cadence
sink.py        what only the chief writes (events, progress, config.json, results.json, export)
results.py     what a run reports (`RunResult`)
trainer.py     the compiled step: any task's loss, the hand-written BPTT, clipping, Adam, noise
optimizer.py   Adam as a checkpointable module
config.py      typed settings; task.py: what a task supplies; flags.py: the shared flags
checkpoints.py, summaries.py, progress.py, lock.py    resume, TensorBoard, the progress line, one writer
distribute.py  `--strategy`: replicas on local devices or worker processes, and who writes
fingerprint.py, memory.py, machine.py   the data and settings a run must keep; the memory it
               needs; what it was measured on
"""
