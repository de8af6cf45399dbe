"""The networks the policies train: an MLP, a small CNN and a small ResNet-style network.

Every model is a :class:`SkipNet`: an ordered list of *units* (the granularity at which layers
are frozen or dropped, earliest first) built from three layer types that the policies can steer:

- :class:`SkipLinear` and :class:`SkipConv2d` run either normally or on a downsampled input
  (method 5): a k x k filter is average-pooled to (k-1) x (k-1) with stride 1, and the first fully
  connected layer pools its weight columns like the input pixels; the pooling is differentiable,
  so the full-resolution weights get the gradient.
- :class:`SkipBatchNorm2d` can *record* the batch statistics of a forward pass and *replay* them
  when the kept rows of that batch are run again with gradients (method 1): the kept rows then
  see exactly the activations of the full-batch forward, and no gradient reaches a skipped row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SkipNet", "SkipLinear", "SkipConv2d", "SkipBatchNorm2d", "MODELS", "build_model",
           "UNIT_TRAIN", "UNIT_FROZEN", "UNIT_DROPPED", "KERNEL_GAINS", "BN_MODES"]

#: names accepted by :func:`build_model`
MODELS = ("mlp", "mlp1", "cnn", "resnet")

#: unit states: trained, frozen (run, no G/U), dropped (replaced by identity, nothing runs)
UNIT_TRAIN, UNIT_FROZEN, UNIT_DROPPED = "train", "frozen", "dropped"

#: gain of a pooled kernel: ``area`` scales it by k^2 / (k-1)^2 (a pooled fully connected
#: layer: by r^2), so a flat filter keeps its response to a flat input; ``none`` keeps the plain
#: average
KERNEL_GAINS = ("area", "none")

#: batch-norm modes, see :class:`SkipBatchNorm2d`
BN_MODES = ("normal", "record", "replay")


def _check_factor(factor: int, shape: tuple[int, ...], what: str) -> None:
    if int(factor) != factor or factor < 2:
        raise ValueError(f"downsampling factor must be an integer >= 2, got {factor}")
    if any(s % factor for s in shape):
        raise ValueError(f"downsampling factor {factor} must divide the {what} size "
                         f"{'x'.join(map(str, shape))}")


class SkipLinear(nn.Linear):
    """``nn.Linear``; when it is the first layer of an MLP (``image_shape`` given) it can take a
    downsampled image: its weight columns are average-pooled over the image the same way as the
    pixels (times r^2 with the ``area`` gain, so a flat image gives the same output)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 image_shape: tuple[int, int, int] | None = None):
        super().__init__(in_features, out_features, bias)
        if image_shape is not None and in_features != image_shape[0] * image_shape[1] * image_shape[2]:
            raise ValueError(f"image_shape {image_shape} does not hold {in_features} features")
        self.image_shape = image_shape
        self.low_res: int | None = None
        self.kernel_gain = "area"

    def forward(self, x):
        if self.low_res is None or self.image_shape is None:
            return super().forward(x)
        c, h, w = self.image_shape
        r = self.low_res
        weight = F.avg_pool2d(self.weight.view(self.out_features, c, h, w), r)
        if self.kernel_gain == "area":
            weight = weight * (r * r)
        return F.linear(x, weight.reshape(self.out_features, -1), self.bias)


class SkipConv2d(nn.Conv2d):
    """``nn.Conv2d`` (zero padding given as integers) that can run with a pooled kernel.

    In low-resolution mode a k x k kernel (k >= 2) is average-pooled to (k-1) x (k-1) with stride
    1 and the input is padded by p-1 before and p after (p the normal padding), which keeps the
    output-size formula of the layer, so residual branches still line up. ``kernel_used`` is the
    kernel the last forward ran, read by the MAC counter.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.padding, str) or self.padding_mode != "zeros":
            raise ValueError("SkipConv2d needs integer zero padding, got "
                             f"padding={self.padding!r}, padding_mode={self.padding_mode!r}")
        self.low_res: int | None = None
        self.kernel_gain = "area"
        self.kernel_used: tuple[int, int] = tuple(self.kernel_size)

    @property
    def poolable(self) -> bool:
        return min(self.kernel_size) >= 2

    def forward(self, x):
        if self.low_res is None or not self.poolable:
            self.kernel_used = tuple(self.kernel_size)
            return super().forward(x)
        kh, kw = self.kernel_size
        weight = F.avg_pool2d(self.weight, 2, stride=1)
        if self.kernel_gain == "area":
            weight = weight * (kh * kw / ((kh - 1) * (kw - 1)))
        ph, pw = self.padding
        x = F.pad(x, (max(pw - 1, 0), pw, max(ph - 1, 0), ph))
        self.kernel_used = (kh - 1, kw - 1)
        return F.conv2d(x, weight, self.bias, self.stride, 0, self.dilation, self.groups)


class SkipBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that can record a batch's statistics and replay them.

    ``mode`` (training only; in eval mode the running statistics are used as usual):

    - ``normal``: plain batch norm;
    - ``record``: normalise with this batch's mean and (biased) variance, keep them, and update
      the running statistics once;
    - ``replay``: normalise the rows given now (the kept subset of the recorded batch) with the
      recorded statistics, leaving the running statistics alone: the kept rows get exactly the
      activations of the recorded forward. The gradient flows through the mean and variance as
      if they were reductions over the rows given now (``replay_reduction="kept"``, default),
      or over the whole recorded batch with the skipped rows held constant (``"full"``).

    Why ``kept``: with ``full``, the gradient no longer respects batch norm's invariance to a
    shift and scale of its input (the skipped rows would not move), the weights drift along
    those directions faster than the running statistics follow, and the eval-mode network
    collapses (digits, ResNet, per-sample skip: test accuracy 14 % against 98 %, training
    accuracy still 98 %). With ``kept`` the batch-norm backward is the ordinary one of a batch
    made of the kept rows, evaluated at the full batch's statistics.
    """

    #: see the class docstring
    REPLAY_REDUCTIONS = ("kept", "full")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mode = "normal"
        self.replay_reduction = "kept"
        self._recorded: tuple[torch.Tensor, torch.Tensor, int] | None = None

    def _affine(self, x, mean, var):
        shape = (1, -1, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    def forward(self, x):
        if not self.training or self.mode == "normal":
            return super().forward(x)
        dims = (0, 2, 3)
        if self.mode == "record":
            n = x.numel() // x.shape[1]
            mean = x.mean(dims)
            var = x.var(dims, unbiased=False)
            self._recorded = (mean.detach(), var.detach(), n)
            if self.track_running_stats and self.running_mean is not None:
                with torch.no_grad():
                    m = self.momentum if self.momentum is not None else 0.1
                    self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                    self.running_var.mul_(1 - m).add_(var * (n / max(n - 1, 1)), alpha=m)
                    self.num_batches_tracked.add_(1)
            return self._affine(x, mean, var)
        if self._recorded is None:
            raise RuntimeError("SkipBatchNorm2d in replay mode before any recorded batch")
        mean0, var0, n = self._recorded
        if self.replay_reduction == "kept":
            n = x.numel() // x.shape[1]
        s = x.sum(dims)
        mean = mean0 + (s - s.detach()) / n
        q = (x * x).sum(dims)
        m2 = mean * mean
        var = var0 + (q - q.detach()) / n - (m2 - m2.detach())
        return self._affine(x, mean, var)


class _LinearUnit(nn.Module):
    def __init__(self, n_in, n_out, relu=True, image_shape=None):
        super().__init__()
        self.flatten = image_shape is not None
        self.linear = SkipLinear(n_in, n_out, image_shape=image_shape)
        self.relu = relu

    def forward(self, x):
        if self.flatten:
            x = x.flatten(1)
        x = self.linear(x)
        return F.relu(x) if self.relu else x


class _ConvUnit(nn.Module):
    def __init__(self, c_in, c_out, pool=False):
        super().__init__()
        self.conv = SkipConv2d(c_in, c_out, 3, padding=1)
        self.pool = pool

    def forward(self, x):
        x = F.relu(self.conv(x))
        return F.max_pool2d(x, 2) if self.pool and min(x.shape[-2:]) >= 2 else x


class _Head(nn.Module):
    def __init__(self, c_in, num_classes):
        super().__init__()
        self.linear = SkipLinear(c_in, num_classes)

    def forward(self, x):
        return self.linear(x.mean((2, 3)))


class _Stem(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = SkipConv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = SkipBatchNorm2d(c_out)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class _BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = SkipConv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = SkipBatchNorm2d(c_out)
        self.conv2 = SkipConv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = SkipBatchNorm2d(c_out)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(SkipConv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          SkipBatchNorm2d(c_out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class SkipNet(nn.Module):
    """A network as an ordered list of units, with per-unit state and a low-resolution mode.

    Members
    -------
    units:
        ``nn.ModuleDict`` of the units in forward order; the last one is the classifier.
    unit_state:
        One of :data:`UNIT_TRAIN`, :data:`UNIT_FROZEN`, :data:`UNIT_DROPPED` per unit.
    droppable:
        Per unit, whether its input and output shapes match (it may be replaced by identity).
    input_shape, num_classes:
        ``(C, H, W)`` of an input image, number of classes.
    """

    def __init__(self, name: str, units: list[tuple[str, nn.Module]],
                 input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        self.name = name
        self.units = nn.ModuleDict(units)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.unit_state = [UNIT_TRAIN] * len(self.units)
        self.low_res: int | None = None
        shapes = self._unit_shapes()
        self.droppable = [a == b for a, b in zip(shapes[:-1], shapes[1:])]
        self.droppable[-1] = False

    @property
    def unit_names(self) -> list[str]:
        return list(self.units.keys())

    def _unit_shapes(self):
        was = self.training
        self.eval()
        with torch.no_grad():
            x = torch.zeros(1, *self.input_shape)
            shapes = [tuple(x.shape[1:])]
            for unit in self.units.values():
                x = unit(x)
                shapes.append(tuple(x.shape[1:]))
        self.train(was)
        if shapes[-1] != (self.num_classes,):
            raise ValueError(f"model output shape {shapes[-1]} is not ({self.num_classes},)")
        return shapes

    def forward(self, x):
        if self.low_res is not None:
            x = F.avg_pool2d(x, self.low_res)
        for unit, state in zip(self.units.values(), self.unit_state):
            if state != UNIT_DROPPED:
                x = unit(x)
        return x

    def set_low_res(self, factor: int | None, pool_kernels: bool = True,
                    kernel_gain: str = "area") -> None:
        """Run the next forwards on inputs average-pooled by ``factor`` (None: full resolution).

        ``pool_kernels``: pool k x k filters to (k-1) x (k-1); otherwise they run unchanged on
        the smaller maps. The first fully connected layer of an MLP always pools its columns.
        """
        if factor is not None:
            _check_factor(factor, self.input_shape[1:], "input image")
            if kernel_gain not in KERNEL_GAINS:
                raise ValueError(f"kernel_gain must be one of {', '.join(KERNEL_GAINS)}, "
                                 f"got {kernel_gain!r}")
        self.low_res = factor
        for m in self.modules():
            if isinstance(m, SkipConv2d):
                m.low_res = factor if pool_kernels else None
                m.kernel_gain = kernel_gain
            elif isinstance(m, SkipLinear):
                m.low_res = factor
                m.kernel_gain = kernel_gain

    def set_bn_mode(self, mode: str) -> None:
        if mode not in BN_MODES:
            raise ValueError(f"batch-norm mode must be one of {', '.join(BN_MODES)}, got {mode!r}")
        for m in self.modules():
            if isinstance(m, SkipBatchNorm2d):
                m.mode = mode

    def apply_unit_modes(self) -> None:
        """Put frozen and dropped units in eval mode (their batch-norm statistics stay fixed);
        call after ``train()``."""
        for unit, state in zip(self.units.values(), self.unit_state):
            unit.train(self.training and state == UNIT_TRAIN)


def _mlp(input_shape, num_classes, width):
    c, h, w = input_shape
    n_in = c * h * w
    units = [("fc1", _LinearUnit(n_in, width, image_shape=input_shape)),
             ("fc2", _LinearUnit(width, width)),
             ("fc3", _LinearUnit(width, num_classes, relu=False))]
    return units


def _mlp1(input_shape, num_classes, width):
    c, h, w = input_shape
    return [("fc1", _LinearUnit(c * h * w, width, image_shape=input_shape)),
            ("fc2", _LinearUnit(width, num_classes, relu=False))]


def _cnn(input_shape, num_classes, width):
    c = input_shape[0]
    return [("conv1", _ConvUnit(c, width)),
            ("conv2", _ConvUnit(width, 2 * width, pool=True)),
            ("conv3", _ConvUnit(2 * width, 2 * width)),
            ("head", _Head(2 * width, num_classes))]


def _resnet(input_shape, num_classes, width):
    c = input_shape[0]
    return [("stem", _Stem(c, width)),
            ("block1", _BasicBlock(width, width, 1)),
            ("block2", _BasicBlock(width, 2 * width, 2)),
            ("block3", _BasicBlock(2 * width, 2 * width, 1)),
            ("head", _Head(2 * width, num_classes))]


_BUILDERS = {"mlp": (_mlp, 128), "mlp1": (_mlp1, 128), "cnn": (_cnn, 16), "resnet": (_resnet, 16)}


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int,
                width: int | None = None) -> SkipNet:
    """A fresh model (initialised from torch's global RNG: seed it first).

    ``mlp``: flatten, 2 hidden layers of ``width`` (default 128) with ReLU, linear classifier.
    ``mlp1``: flatten, 1 hidden layer of ``width`` (default 128) with ReLU, linear classifier
    (the digits 64-128-10 MLP that fits the default accelerator's memories).
    ``cnn``: 3 conv 3x3 + ReLU layers (``width``, 2 ``width``, 2 ``width`` channels, default 16;
    2x2 max pool after the second), global average pool, linear classifier.
    ``resnet``: conv stem with batch norm, 3 basic residual blocks (the second halves the size
    and doubles the channels), global average pool, linear classifier.
    Convolutions get He-normal weights and zero biases, linear layers torch's default.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    builder, default_width = _BUILDERS[name]
    width = default_width if width is None else width
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    net = SkipNet(name, builder(tuple(input_shape), num_classes, width), input_shape, num_classes)
    for m in net.modules():
        # He initialisation: with torch's default the CNN sits at chance for ~5 epochs on digits
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net
