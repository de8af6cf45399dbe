"""The training library: the five skip methods and their random baselines on real training.

Modules: :mod:`.datasets` (digits, CIFAR-10 from a folder, synthetic), :mod:`.models` (MLP, CNN,
ResNet as :class:`~.models.SkipNet`), :mod:`.policies` (the policies and
:class:`~.policies.PolicyStack`), :mod:`.registry` (names and options), :mod:`.counting` (MACs
of F, B, G, U from the shapes run), :mod:`.trainer` (the loop), :mod:`.distributed`
(torch.distributed), :mod:`.report` (tables, JSON, plots), :mod:`.cli` (``skiptrain train`` and
``compare``). See ``golden/training/README_SECTION.md``.

Quick use::

    from golden.training import load_digits, train, TrainConfig
    result = train(load_digits(), "mlp", "conf_sample", TrainConfig(epochs=10))
    result.final_accuracy, result.skip_fractions()
"""

from .datasets import Dataset, load_cifar10, load_dataset, load_digits, make_synthetic
from .models import SkipNet, build_model
from .policies import PolicyStack
from .registry import make_policy
from .trainer import RunResult, TrainConfig, train

__all__ = ["Dataset", "load_cifar10", "load_dataset", "load_digits", "make_synthetic",
           "SkipNet", "build_model", "PolicyStack", "make_policy", "RunResult", "TrainConfig",
           "train"]
