"""Training, evaluation and prediction: ``noah train``, ``noah eval``, ``noah predict``, ``noah compare``.

The loop and its command live in :mod:`~noah.engine.train`; what it is built from:

* :mod:`~noah.engine.config` -- :class:`~noah.engine.config.TrainConfig`, the one typed schema of
  the training options (flags, YAML keys, recipes and ``config.yaml`` all derive from it);
* :mod:`~noah.engine.recipes` -- the paper's set-ups as presets, layered with YAML and flags;
* :mod:`~noah.engine.rundir` -- the run folder: its files, atomic writes, the lock, disk errors;
* :mod:`~noah.engine.checkpoint` -- what a checkpoint holds, RNG states;
* :mod:`~noah.engine.model` -- models from a config, pretrained weights, a run's model read back;
* :mod:`~noah.engine.datasets`, :mod:`~noah.engine.transforms`, :mod:`~noah.engine.loaders` -- data;
* :mod:`~noah.engine.optim`, :mod:`~noah.engine.precision` -- loss, optimizer, schedule, AMP;
* :mod:`~noah.engine.seeding`, :mod:`~noah.engine.preemption` -- reproducibility, clean stops;
* :mod:`~noah.engine.distributed` -- torchrun / DDP helpers;
* :mod:`~noah.engine.evaluate`, :mod:`~noah.engine.predict` -- ``noah eval`` and ``noah predict``;
* :mod:`~noah.engine.compare` -- ``noah compare``: heads side by side over seeds, paired tests.

Imported lazily by the command line, so ``noah models`` does not pay for them.
"""
