"""The training side: settings -> a training -> run directories with records, metrics and a checkpoint.

    build.py      plan_teachers (the teachers a training serves) and build_training (data, models, optimizer)
    state.py      Training (one student, its teachers, the streams) and its checkpoint state
    loop.py       next_batch, training_step, evaluate, and train / train_teachers: THE loop
    rundirs.py    run directory names, creating them, finding the run to --resume, locks
    writer.py     records, metrics.csv, TensorBoard and the progress bar (rank 0)
    checkpoint.py atomic, weights-only checkpoint files; lock.py one process per run directory
    ranks.py      torchrun's ranks and the collectives the loop makes; sampling.py index streams and seeds
    evaluate.py   accuracy, calibration, the Figure-3 quantities, the corruption set, SWA's BatchNorm pass
    sweep.py      grids of runs (local, submitit, SLURM)

Nothing here is imported by ``ssl_bench.report``: the two sides meet only in the records (``ssl_bench.records``).
"""
