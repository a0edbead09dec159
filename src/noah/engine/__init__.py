"""Training, evaluation and prediction: ``noah train``, ``noah eval``, ``noah predict``.

Submodules: :mod:`~noah.engine.train` (the training loop), :mod:`~noah.engine.evaluate`,
:mod:`~noah.engine.predict`, :mod:`~noah.engine.recipes` (the paper's set-ups as presets),
:mod:`~noah.engine.checkpoint` (atomic, weights-only checkpoints),
:mod:`~noah.engine.distributed` (torchrun / DDP helpers), :mod:`~noah.engine.builders`.
Imported lazily by the command line, so ``noah models`` does not pay for them.
"""
