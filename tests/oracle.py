"""torchvision models with random weights, the reference for cropjax's ResNets."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')


def random_torchvision(arch: str, seed: int = 0) -> 'torch.nn.Module':
  """A torchvision ResNet in eval mode with random weights and BatchNorm statistics."""
  torch.manual_seed(seed)
  model = getattr(torchvision.models, arch)(weights=None)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.1)
        m.running_mean.normal_(0.0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
  return model.eval()


def torch_forward(model, x_nhwc: np.ndarray, layer: str = 'layer2'):
  """Logits and the NHWC output of `layer` for an NHWC float32 batch."""
  captured = {}
  hook = getattr(model, layer).register_forward_hook(
      lambda mod, inp, out: captured.__setitem__('x', out.detach().numpy()))
  try:
    with torch.no_grad():
      logits = model(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))))
  finally:
    hook.remove()
  return logits.numpy(), captured['x'].transpose(0, 2, 3, 1)


def state_dict_numpy(model) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def rel_error(actual, expected) -> float:
  """max |actual - expected| / max |expected|."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return float(np.abs(actual - expected).max() / np.abs(expected).max())
