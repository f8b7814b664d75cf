"""Training of UFMs and MLP heads: optimisers, schedules, history, checkpoints, resume.

Modules: :mod:`.loop` (:func:`train`), :mod:`.config` (:class:`TrainConfig`), :mod:`.optimizers`, :mod:`.schedules`, :mod:`.history`,
:mod:`.checkpoint`.

Design choices:

* **Fast steps.** Layered models (:class:`~fastdnc.models.DeepUFM`, :class:`~fastdnc.models.MLPHead`)
  supply exact gradients by hand-written backpropagation (``loss_and_gradients``), and the
  optimisers update the parameters in place with fused ``torch._foreach`` ops, so a step is a few
  matmuls and no autograd graph. Any other module with a ``loss()`` method trains through autograd.
* **Step semantics.** "Step t" is the state after t updates: the history records step 0 (the
  initialisation) and step ``steps`` (the end). The default logging schedule is log-spaced.
* **Checkpoints** hold the parameters, the optimiser state, the RNG state of the mini-batch
  sampler, the history and the step, and are written atomically (:mod:`fastdnc.io`). Resuming
  from one yields bit-for-bit the parameters of an uninterrupted run (tested with a SIGKILL). They
  hold only tensors and plain data and are read with ``weights_only=True``: a crafted file cannot
  run code. A checkpoint records the whole configuration (model and training); resuming with any
  other configuration is refused with the list of differing fields.
* **Non-finite values** (NaN/Inf in the loss, hence in a parameter or the output) stop training
  with :class:`NonFiniteError` naming the step; no checkpoint is written after it, so the last
  good one stays.
"""

from .checkpoint import (
    checkpoint_step,
    config_differences,
    config_hash,
    load_checkpoint,
    read_checkpoint,
    run_config,
)
from .config import TrainConfig, check_training
from .history import History
from .loop import Callback, NonFiniteError, train
from .optimizers import SGD, Adam, Optimizer, make_optimizer
from .schedules import log_steps, lr_factor

__all__ = [
    "SGD",
    "Adam",
    "TrainConfig",
    "Callback",
    "History",
    "NonFiniteError",
    "Optimizer",
    "check_training",
    "checkpoint_step",
    "config_differences",
    "config_hash",
    "load_checkpoint",
    "log_steps",
    "lr_factor",
    "make_optimizer",
    "read_checkpoint",
    "run_config",
    "train",
]
