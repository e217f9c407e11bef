"""torchvision ResNet checkpoints -> cropjax Flax variables.

    variables = convert(read_state_dict('resnet50.pth'), 'resnet50')
    save(variables, 'weights/resnet50', arch='resnet50')
    variables = load('weights/resnet50')   # {'params', 'batch_stats'}

The conversion is strict: every tensor of the checkpoint must land on a variable
of the architecture with the right shape, and every variable must be filled;
otherwise `WeightsMismatchError` lists what is missing, unexpected or of the
wrong shape.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from cropjax import checkpoint
from cropjax import models


class WeightsError(ValueError):
  """A weights file cannot be read or converted."""


class WeightsMismatchError(WeightsError):
  """A checkpoint does not fit the architecture."""

  def __init__(self, message: str, *, missing=(), unexpected=(), mismatched=()):
    super().__init__(message)
    self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)


def _conv(w: np.ndarray) -> np.ndarray:
  return np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO


def _dense(w: np.ndarray) -> np.ndarray:
  return np.transpose(w)  # (out, in) -> (in, out)


def _same(w: np.ndarray) -> np.ndarray:
  return w


# torchvision state_dict key (regex)  ->  Flax variable path, and the layout change.
# `layer{i}.{j}` is block j of stage i, named `layer{i}_{j}` in cropjax.models.
NAME_MAP: tuple[tuple[str, str, Callable[[np.ndarray], np.ndarray]], ...] = (
    (r'conv1\.weight', r'params/stem_conv/kernel', _conv),
    (r'bn1\.weight', r'params/stem_bn/scale', _same),
    (r'bn1\.bias', r'params/stem_bn/bias', _same),
    (r'bn1\.running_mean', r'batch_stats/stem_bn/mean', _same),
    (r'bn1\.running_var', r'batch_stats/stem_bn/var', _same),
    (r'layer(\d+)\.(\d+)\.conv(\d)\.weight', r'params/layer\1_\2/conv\3/kernel', _conv),
    (r'layer(\d+)\.(\d+)\.bn(\d)\.weight', r'params/layer\1_\2/bn\3/scale', _same),
    (r'layer(\d+)\.(\d+)\.bn(\d)\.bias', r'params/layer\1_\2/bn\3/bias', _same),
    (r'layer(\d+)\.(\d+)\.bn(\d)\.running_mean', r'batch_stats/layer\1_\2/bn\3/mean', _same),
    (r'layer(\d+)\.(\d+)\.bn(\d)\.running_var', r'batch_stats/layer\1_\2/bn\3/var', _same),
    (r'layer(\d+)\.(\d+)\.downsample\.0\.weight', r'params/layer\1_\2/downsample_conv/kernel', _conv),
    (r'layer(\d+)\.(\d+)\.downsample\.1\.weight', r'params/layer\1_\2/downsample_bn/scale', _same),
    (r'layer(\d+)\.(\d+)\.downsample\.1\.bias', r'params/layer\1_\2/downsample_bn/bias', _same),
    (r'layer(\d+)\.(\d+)\.downsample\.1\.running_mean', r'batch_stats/layer\1_\2/downsample_bn/mean', _same),
    (r'layer(\d+)\.(\d+)\.downsample\.1\.running_var', r'batch_stats/layer\1_\2/downsample_bn/var', _same),
    (r'fc\.weight', r'params/fc/kernel', _dense),
    (r'fc\.bias', r'params/fc/bias', _same),
)
# Bookkeeping tensors with no counterpart in Flax.
IGNORED = (r'.*\.num_batches_tracked',)

_LIST_LIMIT = 12


def flax_path(torch_key: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]] | None:
  """The Flax path ('collection/module/.../leaf') and layout change for a torch key."""
  for pattern, target, fn in NAME_MAP:
    m = re.fullmatch(pattern, torch_key)
    if m:
      return m.expand(target), fn
  return None


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a torchvision state dict from `.pth`/`.pt` (needs torch) or `.safetensors`."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise WeightsError(f'{path}: no such file')
  ext = os.path.splitext(path)[1].lower()
  try:
    if ext == '.safetensors':
      from safetensors.numpy import load_file
      state = load_file(path)
    elif ext in ('.pth', '.pt', '.bin', '.ckpt'):
      try:
        import torch
      except ImportError:
        raise WeightsError(f'{path}: reading a torch checkpoint needs PyTorch '
                           "(pip install torch), or convert it to .safetensors first") from None
      obj = torch.load(path, map_location='cpu', weights_only=True)
      if isinstance(obj, Mapping) and 'state_dict' in obj and isinstance(obj['state_dict'], Mapping):
        obj = obj['state_dict']
      if not isinstance(obj, Mapping):
        raise WeightsError(f'{path}: expected a state dict, found {type(obj).__name__}')
      state = {k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
               for k, v in obj.items() if hasattr(v, 'numpy')}
    else:
      raise WeightsError(f'{path}: unknown weights format {ext!r} '
                         '(expected .pth, .pt or .safetensors)')
  except WeightsError:
    raise
  except Exception as e:  # corrupt or hostile files: one clear line
    raise WeightsError(f'{path}: cannot read weights ({type(e).__name__}: {e})') from e
  if state and all(k.startswith('module.') for k in state):  # saved from DataParallel
    state = {k[len('module.'):]: v for k, v in state.items()}
  return {k: np.asarray(v) for k, v in state.items()}


def _guess_arch(keys: set[str]) -> str | None:
  """The torchvision architecture whose parameter names are exactly `keys`, if any."""
  for arch in ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152'):
    expected = set(_expected_shapes(models.get(arch, num_classes=1000)))
    if {flax_path(k)[0] for k in keys if flax_path(k)} == expected:
      return arch
  return None


def _expected_shapes(model: models.ResNet) -> dict[str, tuple[int, ...]]:
  x = jax.ShapeDtypeStruct((1, 64, 64, model.in_channels), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  flat = flax.traverse_util.flatten_dict(
      models.variables_of(shapes), sep='/')
  return {k: tuple(v.shape) for k, v in flat.items()}


def _listing(title: str, items: list[str]) -> str:
  shown = items[:_LIST_LIMIT]
  more = f'\n    ... and {len(items) - len(shown)} more' if len(items) > len(shown) else ''
  return f'  {title} ({len(items)}):\n' + '\n'.join(f'    {s}' for s in shown) + more


def convert(state_dict: Mapping[str, np.ndarray], arch: str, *,
            source: str = 'checkpoint') -> dict[str, Any]:
  """Converts a torchvision ResNet state dict into {'params', 'batch_stats'} for `arch`.

  The classifier is kept when the checkpoint has one (`fc.weight` sets num_classes);
  a checkpoint without `fc.*` converts for `num_classes=None`.
  """
  keys = [k for k in state_dict if not any(re.fullmatch(p, k) for p in IGNORED)]
  num_classes = int(state_dict['fc.weight'].shape[0]) if 'fc.weight' in state_dict else None
  in_channels = int(state_dict['conv1.weight'].shape[1]) if 'conv1.weight' in state_dict else 3
  model = models.get(arch, num_classes=num_classes, in_channels=in_channels)
  expected = _expected_shapes(model)

  flat, unexpected, mismatched = {}, [], []
  for key in keys:
    mapped = flax_path(key)
    if mapped is None or mapped[0] not in expected:
      unexpected.append(key)
      continue
    path, fn = mapped
    value = fn(np.array(state_dict[key], np.float32))  # a copy: never alias the source
    if value.shape != expected[path]:
      mismatched.append(f'{key} {tuple(state_dict[key].shape)} -> {path} expects '
                        f'{expected[path]} (after layout change)')
      continue
    flat[path] = value
  missing = sorted(set(expected) - set(flat) -
                   {flax_path(k)[0] for k in keys if flax_path(k)})
  if unexpected or missing or mismatched:
    guess = _guess_arch(set(keys))
    hint = f'\n  the keys match torchvision {guess}: try --arch {guess}' if guess and guess != arch else ''
    parts = [_listing(t, l) for t, l in (('unexpected keys', unexpected),
                                          ('missing variables', missing),
                                          ('shape mismatches', mismatched)) if l]
    raise WeightsMismatchError(
        f'{source} does not fit {arch}:\n' + '\n'.join(parts) + hint,
        missing=missing, unexpected=unexpected, mismatched=mismatched)
  return flax.traverse_util.unflatten_dict(flat, sep='/')


def expand_stem(variables: Mapping[str, Any], in_channels: int = 6) -> dict[str, Any]:
  """Widens the 3-channel stem to `in_channels` (a multiple of 3): repeat, then divide.

  A stacked input made of the same RGB image k times gives exactly the 3-channel
  model's activations, so ImageNet features carry over to the pair input.
  """
  kernel = np.asarray(variables['params']['stem_conv']['kernel'])
  if kernel.shape[2] != 3 or in_channels % 3:
    raise WeightsError(f'can only expand a 3-channel stem to a multiple of 3 channels, '
                       f'got {kernel.shape[2]} -> {in_channels}')
  reps = in_channels // 3
  out = flax.core.unfreeze(jax.tree_util.tree_map(np.asarray, dict(variables)))
  out['params']['stem_conv']['kernel'] = np.tile(kernel, (1, 1, reps, 1)) / reps
  return out


def save(variables: Mapping[str, Any], directory: str | os.PathLike, *, arch: str,
         source: str = '', overwrite: bool = False) -> str:
  """Saves converted variables with orbax, recording the architecture."""
  params = variables['params']
  meta = {
      'format': 'cropjax.weights/1',
      'arch': arch,
      'in_channels': int(np.shape(params['stem_conv']['kernel'])[2]),
      'num_classes': int(np.shape(params['fc']['kernel'])[1]) if 'fc' in params else None,
      'source': source,
  }
  return checkpoint.save_variables(directory, dict(variables), meta, overwrite=overwrite)


def load(directory: str | os.PathLike, *, with_meta: bool = False):
  """Loads variables saved by `save` (or `scripts/convert_weights.py`)."""
  variables, meta = checkpoint.load_variables(directory)
  variables = models.variables_of(variables)
  return (variables, meta) if with_meta else variables
