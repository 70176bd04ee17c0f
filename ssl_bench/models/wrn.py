"""Wide ResNet-depth-k as used by FixMatch (Sohn et al., NeurIPS 2020), MixMatch and ReMixMatch.

Reference: google-research/fixmatch, ``libml/models.py``, class ``ResNet.classifier`` (TensorFlow 1), run with
``--filters=32 --repeat=4 --scales=3`` for WRN-28-2 (the defaults in ``fixmatch.py``) and ``--filters=128``
for the WRN-28-8 the paper uses on CIFAR-100.  The network, in the reference's own order:

    conv3x3(3 -> 16)
    for group g in 0, 1, 2:                     # widths 16k, 32k, 64k; strides 1, 2, 2
        n = (depth - 4) / 6 pre-activation basic blocks:
            a = LeakyReLU_0.1(BN(x))
            y = conv3x3(LeakyReLU_0.1(BN(conv3x3_stride(a))))
            x = shortcut + y                     # shortcut: x, or conv1x1_stride(x or a) when channels change
    features = mean_HW(LeakyReLU_0.1(BN(x)))      # the reference's ``embeds``
    logits   = Linear(features)

Deviations from the TensorFlow reference, on purpose (see ``_CONV_BIAS``): the convolutions carry no bias, and
the input is not normalised inside the network. What the reference feeds: pixels scaled to [-1, 1] when its
records are parsed (``libml/data.py`` ``record_parse``: ``x * 2 / 255 - 1``), then ``(x - mean) / std`` as the
model's first op (``libml/models.py``) with the ``DataSets`` defaults mean 0, std 1, i.e. [-1, 1]. ssl-bench
standardises each channel with the training set's mean and std in the data stage (``ssl_bench.augment.normalize``)
instead. Both are per-channel affine maps of the pixels, so the first convolution can represent either; its
initialisation and weight decay see inputs of a slightly different scale (std 1 instead of about 0.5), which
is a small deviation, not an identity.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ssl_bench.errors import UserError

# --- Constants, each with its source ----------------------------------------------------------------------

# libml/models.py: ``bn_args = dict(training=training, momentum=0.999)`` for tf.layers.batch_normalization,
# whose moving average is  moving = 0.999 * moving + 0.001 * batch.  PyTorch's ``momentum`` is the weight of
# the *new* batch statistic, so TF 0.999 == PyTorch 0.001.
BN_MOMENTUM = 0.001
# libml/models.py passes no epsilon, so tf.layers.batch_normalization's default epsilon=0.001 applies
# (TF 1.x API docs, tf.layers.batch_normalization signature).  PyTorch's own default would be 1e-5.
BN_EPS = 1e-3
# libml/models.py: ``leaky_relu = functools.partial(tf.nn.leaky_relu, alpha=0.1)``.
LEAKY_SLOPE = 0.1
# libml/models.py: ``tf.layers.conv2d((x - mean) / std, 16, 3, ...)`` -- the stem always has 16 channels.
STEM_CHANNELS = 16
# The reference's ``tf.layers.conv2d`` keeps TF's default ``use_bias=True`` (zero-initialised, and excluded
# from weight decay there because only variables named 'kernel' are decayed in fixmatch.py).  We drop the conv
# biases, as the common PyTorch ports do (kekmodel/FixMatch-pytorch, TorchSSL / USB ``wrn.py``): the first
# conv of every block feeds a BatchNorm, which cancels a per-channel bias exactly, and leaving them out means
# a generic weight-decay setting cannot decay parameters the reference never decayed.  Cost: WRN-28-2 has
# 2,032 fewer parameters than the TF graph (1,467,610 vs 1,469,642); both round to 1.47 M.
_CONV_BIAS = False
# Truncated normal cut at two standard deviations (TF's truncated_normal) has std = 0.87962566... * sigma;
# TF's variance-scaling initialisers divide sigma by it so that the *truncated* draw has the requested std.
_TF_TRUNC_STD = 0.87962566103423978


def _tf_conv_init_(conv: nn.Conv2d) -> None:
    """libml/models.py ``conv_args``: ``tf.random_normal_initializer(stddev=rsqrt(0.5 * k * k * f))``.

    With f = filters out, std = sqrt(2 / (k * k * out_channels)), a plain (untruncated) normal: exactly
    PyTorch's
    ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` (gain sqrt(2), fan_out = out_channels * k * k).
    """
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _tf_dense_init_(linear: nn.Linear) -> None:
    """libml/models.py: ``tf.layers.dense(y, nclass, kernel_initializer=tf.glorot_normal_initializer())``.

    TF's glorot_normal is a normal truncated at +-2 sigma whose std *after truncation* is sqrt(2 / (fan_in +
    fan_out)) (TF API docs).  PyTorch's ``xavier_normal_`` is untruncated, so we reproduce TF exactly with
    ``trunc_normal_``.  The bias keeps tf.layers.dense's default: present, zero-initialised.
    """
    fan_out, fan_in = linear.weight.shape
    sigma = math.sqrt(2.0 / (fan_in + fan_out)) / _TF_TRUNC_STD
    nn.init.trunc_normal_(linear.weight, mean=0.0, std=sigma, a=-2.0 * sigma, b=2.0 * sigma)
    nn.init.zeros_(linear.bias)


def _bn(channels: int) -> nn.BatchNorm2d:
    # gamma = 1, beta = 0, moving mean 0, moving variance 1: tf.layers.batch_normalization's defaults and
    # PyTorch's.
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM, eps=BN_EPS)


def _act() -> nn.LeakyReLU:
    # Not in-place: the pre-activation output is also the shortcut input of the first block.
    return nn.LeakyReLU(LEAKY_SLOPE)


class PreActBlock(nn.Module):
    """A pre-activation basic block (libml/models.py ``residual``, activate_before_residual included).

    ``activate_before_residual`` (True only for the very first block of the network in the reference) feeds
    the shortcut with BN+LeakyReLU(x0) instead of x0.  The shortcut is a 1x1 conv with the block's stride
    whenever the channel count changes (reference: ``if x0.get_shape()[3] != filters``), else the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 activate_before_residual: bool = False):
        super().__init__()
        self.activate_before_residual = activate_before_residual
        self.bn1 = _bn(in_channels)
        self.act1 = _act()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=_CONV_BIAS)
        self.bn2 = _bn(out_channels)
        self.act2 = _act()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=_CONV_BIAS)
        self.shortcut: nn.Module | None = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, padding=0, bias=_CONV_BIAS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act1(self.bn1(x))
        residual = a if self.activate_before_residual else x
        if self.shortcut is not None:
            residual = self.shortcut(residual)
        y = self.conv2(self.act2(self.bn2(self.conv1(a))))
        return residual + y


class WideResNet(nn.Module):
    """WRN-depth-width of FixMatch: ``forward(x) == classifier(features(x))``, ``features`` = pooled embeds.

    depth = 6 n + 4 (n blocks per group; 28 -> 4, the reference's ``repeat=4``); the groups have 16*width,
    32*width and 64*width channels (reference: ``filters << scale`` with filters = 16*width), strides 1, 2, 2.
    ``scales`` (default 3) sets the number of groups, each doubling the channels with stride 2: the reference
    derives it from the image side (fixmatch.py ``scales=FLAGS.scales or (ilog2(width) - 2)``), 5 for STL-10.
    No dropout: the reference's ``dropout`` defaults to 0 and fixmatch.py never sets it.
    """

    def __init__(self, num_classes: int, depth: int = 28, width: int = 2, scales: int = 3):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise UserError(f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        if width < 1:
            raise UserError(f"WideResNet width must be >= 1, got {width}")
        if num_classes < 1:
            raise UserError(f"num_classes must be >= 1, got {num_classes}")
        if scales < 1:
            raise UserError(f"WideResNet scales must be >= 1, got {scales}")
        self.depth, self.width, self.scales = depth, width, scales
        blocks_per_group = (depth - 4) // 6
        # reference: ``filters << scale`` for scale in range(scales); scales = ilog2(image side) - 2 in fixmatch.py,
        # 3 at 32 px (the WRN-28-k of the paper), 5 at STL-10's 96 px
        widths = [(16 * width) << g for g in range(scales)]

        self.stem = nn.Conv2d(3, STEM_CHANNELS, 3, stride=1, padding=1, bias=_CONV_BIAS)
        groups = []
        in_channels = STEM_CHANNELS
        for g, (out_channels, stride) in enumerate(zip(widths, (1,) + (2,) * (scales - 1), strict=True)):
            blocks = []
            for i in range(blocks_per_group):
                blocks.append(PreActBlock(in_channels, out_channels, stride if i == 0 else 1,
                                          activate_before_residual=(g == 0 and i == 0)))
                in_channels = out_channels
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.bn = _bn(in_channels)
        self.act = _act()
        self.num_features = in_channels
        self.classifier = nn.Linear(in_channels, num_classes)  # bias: tf.layers.dense default use_bias=True

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _tf_conv_init_(m)
            elif isinstance(m, nn.Linear):
                _tf_dense_init_(m)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float -> (N, 64 * width): BN + LeakyReLU + global average pool (``embeds``)."""
        x = self.groups(self.stem(x))
        return self.act(self.bn(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def extra_repr(self) -> str:
        return f"depth={self.depth}, width={self.width}" + (f", scales={self.scales}" if self.scales != 3 else "")
