"""Flax linen ResNets that reproduce torchvision's architecture exactly.

`ResNet18` ... `ResNet152` are `functools.partial`s of one `ResNet` module. They
follow torchvision layer for layer (BasicBlock; Bottleneck v1.5 with the stride
on the 3x3 convolution), with torch's paddings written out so that converted
ImageNet weights give torchvision's activations, not only its logits:

  stem conv 7x7/2 pad 3, max-pool 3x3/2 pad 1, 3x3 convs pad 1, 1x1 convs pad 0.

BatchNorm uses epsilon 1e-5 and flax momentum 0.9 (torch's momentum 0.1: flax
keeps `0.9 * running + 0.1 * batch`). Parameters are float32; `dtype` sets the
compute dtype (float32 or bfloat16).

    model = cropjax.models.ResNet50(num_classes=1000)
    logits = model.apply(variables, normalize(images_uint8_nhwc), train=False)

With `num_classes=None` the model returns the last feature map (B, H/32, W/32, C)
with neither average pooling nor classifier, so task heads can replace them.
Each stage's output is also sown in the 'intermediates' collection
(`layer1` ... `layer4`) for inspection and tests.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cropjax import host_buffers
from cropjax.conv import Conv
from cropjax.norm import BatchNorm
from cropjax.pool import max_pool_3x3_s2

# Keep XLA:CPU's per-step temporaries mapped between steps (cropjax/host_buffers.py).
host_buffers.install()

ModuleDef = Any

# torchvision's ImageNet normalisation, in 0..1 pixel units.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# torch.nn.BatchNorm2d defaults, in flax's convention.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # = 1 - torch momentum 0.1


def normalize(images: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
  """Maps uint8 NHWC images (3 or 6 channels, stacked RGB) to torchvision's input."""
  channels = images.shape[-1]
  if channels % 3:
    raise ValueError(f'expected RGB or stacked RGB channels, got {channels}')
  reps = channels // 3
  mean = jnp.asarray(np.tile(IMAGENET_MEAN, reps) * 255.0)
  std = jnp.asarray(np.tile(IMAGENET_STD, reps) * 255.0)
  return ((jnp.asarray(images, jnp.float32) - mean) / std).astype(dtype)


def _pad(p: int) -> tuple[tuple[int, int], tuple[int, int]]:
  return ((p, p), (p, p))


class BasicBlock(nn.Module):
  """torchvision BasicBlock: 3x3 (stride) -> 3x3, expansion 1."""
  planes: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    residual = x
    y = self.conv(self.planes, (3, 3), (self.strides,) * 2, padding=_pad(1), name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.planes, (3, 3), padding=_pad(1), name='conv2')(y)
    y = self.norm(name='bn2')(y)
    if self.strides != 1 or x.shape[-1] != self.planes * self.expansion:
      residual = self.conv(self.planes * self.expansion, (1, 1), (self.strides,) * 2,
                           padding=_pad(0), name='downsample_conv')(x)
      residual = self.norm(name='downsample_bn')(residual)
    return nn.relu(y + residual)


class Bottleneck(nn.Module):
  """torchvision Bottleneck (v1.5): 1x1 -> 3x3 (stride) -> 1x1, expansion 4."""
  planes: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    residual = x
    y = self.conv(self.planes, (1, 1), padding=_pad(0), name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.planes, (3, 3), (self.strides,) * 2, padding=_pad(1), name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(self.planes * self.expansion, (1, 1), padding=_pad(0), name='conv3')(y)
    y = self.norm(name='bn3')(y)
    if self.strides != 1 or x.shape[-1] != self.planes * self.expansion:
      residual = self.conv(self.planes * self.expansion, (1, 1), (self.strides,) * 2,
                           padding=_pad(0), name='downsample_conv')(x)
      residual = self.norm(name='downsample_bn')(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """torchvision-exact ResNet.

  Attributes:
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block_cls: `BasicBlock` or `Bottleneck`.
    num_classes: classifier outputs; None returns the last feature map.
    width: channels of the stem and first stage (64 in torchvision).
    in_channels: channels the input must have (3 for RGB, 6 for a stacked pair).
    dtype: compute dtype; parameters stay float32.
    conv: convolution module (`cropjax.conv.Conv`, or `nn.Conv`).
    outputs: stages (1-4) whose feature maps are returned, as a tuple, instead of
      the classifier or the last map; stages after the last of them are not built
      (an encoder that needs stride 8 and 16 stops after layer3).
  """
  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  num_classes: int | None = 1000
  width: int = 64
  in_channels: int = 3
  dtype: Any = jnp.float32
  conv: ModuleDef = Conv
  outputs: tuple[int, ...] | None = None

  @property
  def stages_built(self) -> int:
    """How many stages the network builds: all, or up to the last of `outputs`."""
    return max(self.outputs) if self.outputs else len(self.stage_sizes)

  @property
  def num_features(self) -> int:
    """Channels of the last feature map."""
    return self.width * 8 * self.block_cls.expansion

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(
          f'{type(self).__name__} expects NHWC input with {self.in_channels} channels, '
          f'got shape {tuple(x.shape)}')
    conv = functools.partial(self.conv, use_bias=False, dtype=self.dtype,
                             param_dtype=jnp.float32)
    norm = functools.partial(BatchNorm, use_running_average=not train,
                             momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                             dtype=self.dtype, param_dtype=jnp.float32)
    x = jnp.asarray(x, self.dtype)
    x = conv(self.width, (7, 7), (2, 2), padding=_pad(3), name='stem_conv')(x)
    x = nn.relu(norm(name='stem_bn')(x))
    x = max_pool_3x3_s2(x)  # = nn.max_pool(x, (3, 3), (2, 2), _pad(1)), faster on CPU
    maps = []
    for i, num_blocks in enumerate(self.stage_sizes[:self.stages_built]):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block_cls(self.width * 2**i, strides, conv=conv, norm=norm,
                           name=f'layer{i + 1}_{j}')(x)
      self.sow('intermediates', f'layer{i + 1}', x)
      maps.append(x)
    if self.outputs:
      return tuple(maps[k - 1] for k in self.outputs)
    if self.num_classes is None:
      return x
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                    name='fc')(x)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=Bottleneck)

# Test-only variants: the same topology with a few channels and one block a stage.
TinyResNet = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock, width=8)
TinyBottleneckResNet = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1),
                                         block_cls=Bottleneck, width=8)

ARCHITECTURES: dict[str, Callable[..., ResNet]] = {
    'resnet18': ResNet18,
    'resnet34': ResNet34,
    'resnet50': ResNet50,
    'resnet101': ResNet101,
    'resnet152': ResNet152,
    'tiny': TinyResNet,
    'tiny_bottleneck': TinyBottleneckResNet,
}


def get(arch: str, **kwargs: Any) -> ResNet:
  """Builds an architecture by name ('resnet18' ... 'resnet152', 'tiny')."""
  try:
    return ARCHITECTURES[arch](**kwargs)
  except KeyError:
    raise ValueError(
        f'unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}') from None


# The variable collections a trained ResNet model is: what is saved, loaded, converted and checked.
VARIABLES = ('params', 'batch_stats')


def variables_of(variables: Any) -> dict[str, Any]:
  """`VARIABLES` of a model's variables (init's or a checkpoint's may hold other collections);
  KeyError where one is missing."""
  return {k: variables[k] for k in VARIABLES}


def init_variables(module: nn.Module, rng: jax.Array, *args: Any, **kwargs: Any) -> Any:
  """`module.init(rng, *args, **kwargs)`, compiled: it runs once, so on the CPU XLA's backend
  does not optimise it (a tiny pair model's init compiled in 6.7-8.3 s, and in 1.5 s so; the
  values are the same random draws, to a float32 rounding at most)."""
  options = {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else None
  return jax.jit(functools.partial(module.init, **kwargs), compiler_options=options)(rng, *args)


def init(model: ResNet, rng: jax.Array, image_size: int = 224) -> dict[str, Any]:
  """Initialises {'params', 'batch_stats'} for `model` on a dummy batch."""
  x = jnp.zeros((1, image_size, image_size, model.in_channels), jnp.float32)
  variables = init_variables(model, rng, x, train=False)
  return variables_of(variables)


def count_params(params: Any) -> int:
  """Number of scalar parameters in a pytree."""
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
