"""torchvision checkpoints -> cropjax weights, checked against torchvision's activations."""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cropjax import models
from cropjax import weights
from oracle import random_torchvision, rel_error, state_dict_numpy, torch, torch_forward
from scripts import convert_weights


def _convert_with_script(tmp_path, arch, tmodel, *extra):
  pth = tmp_path / f'{arch}.pth'
  torch.save(tmodel.state_dict(), pth)
  out = tmp_path / f'{arch}_flax'
  assert convert_weights.main(['--arch', arch, '--input', str(pth), '--output', str(out), *extra]) == 0
  return out


@pytest.mark.parametrize('arch', ['resnet18', 'resnet50'])
def test_converted_checkpoint_reproduces_torchvision(tmp_path, arch):
  tmodel = random_torchvision(arch)
  directory = _convert_with_script(tmp_path, arch, tmodel)
  variables, meta = weights.load(directory, with_meta=True)
  assert set(variables) == {'params', 'batch_stats'}
  assert meta['arch'] == arch and meta['num_classes'] == 1000 and meta['in_channels'] == 3

  x = np.random.default_rng(0).standard_normal((2, 64, 80, 3)).astype(np.float32)
  ref_logits, ref_layer2 = torch_forward(tmodel, x, 'layer2')
  model = models.get(arch, num_classes=1000)
  logits, state = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=['intermediates']))(
      variables, x)
  assert rel_error(logits, ref_logits) < 1e-4
  # After layer2 (8x10 here), so that a wrong padding cannot hide behind the pooling.
  layer2 = state['intermediates']['layer2'][0]
  assert layer2.shape == ref_layer2.shape
  assert rel_error(layer2, ref_layer2) < 1e-4


def test_safetensors_reads_without_torch_and_matches(tmp_path):
  safetensors_numpy = pytest.importorskip('safetensors.numpy')
  tmodel = random_torchvision('resnet18', seed=1)
  path = tmp_path / 'r18.safetensors'
  safetensors_numpy.save_file({k: np.ascontiguousarray(v) for k, v in state_dict_numpy(tmodel).items()},
                              str(path))
  variables = weights.convert(weights.read_state_dict(path), 'resnet18')
  x = np.random.default_rng(1).standard_normal((1, 64, 64, 3)).astype(np.float32)
  ref_logits, _ = torch_forward(tmodel, x)
  assert rel_error(models.ResNet18().apply(variables, x), ref_logits) < 1e-4


def test_wrong_architecture_is_refused_with_key_listing(tmp_path, capsys):
  pth = tmp_path / 'resnet50.pth'
  torch.save(random_torchvision('resnet50').state_dict(), pth)
  out = tmp_path / 'out'
  code = convert_weights.main(['--arch', 'resnet18', '--input', str(pth), '--output', str(out)])
  err = capsys.readouterr().err
  assert code == 2
  assert 'does not fit resnet18' in err
  assert 'unexpected keys' in err and 'layer1.0.conv3.weight' in err
  assert 'shape mismatches' in err and 'layer1.0.conv1.weight' in err
  assert 'try --arch resnet50' in err
  assert not out.exists()


def test_missing_and_unexpected_keys_are_listed():
  state = state_dict_numpy(random_torchvision('resnet18'))
  del state['layer3.1.bn2.running_var']
  state['head.weight'] = np.zeros((2, 2), np.float32)
  with pytest.raises(weights.WeightsMismatchError) as info:
    weights.convert(state, 'resnet18', source='ckpt.pth')
  assert info.value.missing == ['batch_stats/layer3_1/bn2/var']
  assert info.value.unexpected == ['head.weight']
  assert 'ckpt.pth does not fit resnet18' in str(info.value)


def test_num_batches_tracked_is_ignored_and_fc_optional():
  state = state_dict_numpy(random_torchvision('resnet18'))
  assert any(k.endswith('num_batches_tracked') for k in state)
  state = {k: v for k, v in state.items() if not k.startswith('fc.')}
  variables = weights.convert(state, 'resnet18')
  assert 'fc' not in variables['params']
  out = models.ResNet18(num_classes=None).apply(variables, jnp.zeros((1, 64, 64, 3)))
  assert out.shape == (1, 2, 2, 512)


def test_name_map_rows():
  assert weights.flax_path('layer4.1.downsample.1.running_var')[0] == \
      'batch_stats/layer4_1/downsample_bn/var'
  assert weights.flax_path('layer2.0.conv3.weight')[0] == 'params/layer2_0/conv3/kernel'
  assert weights.flax_path('fc.weight')[0] == 'params/fc/kernel'
  assert weights.flax_path('layer1.0.num_batches_tracked') is None


def test_stem_expansion_pair_of_same_image_gives_same_features():
  model3 = models.ResNet18(num_classes=None)
  model6 = models.ResNet18(num_classes=None, in_channels=6)
  variables = weights.convert(state_dict_numpy(random_torchvision('resnet18', seed=2)), 'resnet18')
  wide = weights.expand_stem(variables, 6)
  assert wide['params']['stem_conv']['kernel'].shape == (7, 7, 6, 64)
  assert variables['params']['stem_conv']['kernel'].shape == (7, 7, 3, 64)  # input untouched
  x = np.random.default_rng(2).standard_normal((2, 64, 64, 3)).astype(np.float32)
  f3 = model3.apply(variables, x)
  f6 = model6.apply(wide, np.concatenate([x, x], axis=-1))
  assert rel_error(f6, f3) < 1e-5
  # And two different images do not give the first image's features.
  f6b = model6.apply(wide, np.concatenate([x, x[::-1]], axis=-1))
  assert rel_error(f6b, f3) > 1e-2
  with pytest.raises(weights.WeightsError):
    weights.expand_stem(wide, 6)


def test_script_expands_stem_for_pairs(tmp_path):
  directory = _convert_with_script(tmp_path, 'resnet18', random_torchvision('resnet18'),
                                   '--in-channels', '6')
  variables, meta = weights.load(directory, with_meta=True)
  assert meta['in_channels'] == 6
  assert variables['params']['stem_conv']['kernel'].shape == (7, 7, 6, 64)


class _Evil:
  def __reduce__(self):
    return (os.system, ('echo pwned',))


def test_pickled_code_is_refused(tmp_path):
  path = tmp_path / 'evil.pth'
  with open(path, 'wb') as f:
    pickle.dump({'conv1.weight': _Evil()}, f)
  with pytest.raises(weights.WeightsError, match='evil.pth: cannot read weights'):
    weights.read_state_dict(path)


def test_bad_paths(tmp_path):
  with pytest.raises(weights.WeightsError, match='nope.pth: no such file'):
    weights.read_state_dict(tmp_path / 'nope.pth')
  (tmp_path / 'w.h5').write_bytes(b'x')
  with pytest.raises(weights.WeightsError, match='unknown weights format'):
    weights.read_state_dict(tmp_path / 'w.h5')
  (tmp_path / 'trunc.pth').write_bytes(b'PK\x03\x04garbage')
  with pytest.raises(weights.WeightsError, match='trunc.pth: cannot read weights'):
    weights.read_state_dict(tmp_path / 'trunc.pth')
  with pytest.raises(Exception, match='not a cropjax weights directory'):
    weights.load(tmp_path)


def test_save_is_atomic_and_refuses_to_overwrite(tmp_path):
  variables = models.init(models.TinyResNet(num_classes=4), jax.random.key(0), 32)
  path = weights.save(variables, tmp_path / 'w', arch='tiny')
  assert not [p for p in os.listdir(tmp_path) if p != 'w']  # no temporary leftovers
  with pytest.raises(FileExistsError):
    weights.save(variables, tmp_path / 'w', arch='tiny')
  loaded = weights.load(path)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)
