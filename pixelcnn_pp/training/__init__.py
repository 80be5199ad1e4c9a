"""Training PixelCNN++ (or the baseline) as the original's train.py does, on TensorFlow 2's
distribution machinery.

    from pixelcnn_pp.training import TrainConfig, train
    train(TrainConfig(data_set="demo", nr_resnet=1, nr_filters=32, max_epochs=1, nr_gpu=1))

- ``loop.py``: ``train`` and its phases (``resume_or_initialise``, ``train_epoch``,
  ``evaluate``, ``log_and_save``), each a function of a ``Run``;
- ``run.py``: ``setup`` -> ``Run`` (strategy, data, model, optimiser, averages, counters);
- ``steps.py``: the compiled training and evaluation steps and their input pipeline;
- ``outputs.py``: the files a run writes beside its checkpoints.
"""

from pixelcnn_pp.config import TrainConfig
from pixelcnn_pp.training.loop import (EpochResult, NonFiniteLossError, evaluate,
                                       learning_rate_at, log_and_save, resume_or_initialise,
                                       train, train_epoch)
from pixelcnn_pp.training.run import Run, make_strategy, setup
from pixelcnn_pp.training.steps import distribute_batches, make_steps, one_hot_labels

__all__ = ["TrainConfig", "train", "Run", "setup", "resume_or_initialise", "train_epoch",
           "evaluate", "log_and_save", "EpochResult", "learning_rate_at", "make_strategy",
           "make_steps", "distribute_batches", "one_hot_labels", "NonFiniteLossError"]
