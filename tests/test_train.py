"""Training: freeze-then-unfreeze, resume == uninterrupted, config errors, NaN stop, ImageNet init,
data parallel, and the auto-crop task."""

import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest

from configs import autocrop_tiny
from configs import tiny
from cropjax import checkpoint
from cropjax import models
from cropjax import train
from cropjax import weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(photo_folder, tmp_path, **overrides):
  c = tiny.get_config()
  c.data.source = str(photo_folder)
  # One prepared tfds copy of the photos for the module's tests (they run one after another).
  c.data.data_dir = str(photo_folder.parent / 'tfds')
  for k, v in overrides.items():
    node = c
    *parents, leaf = k.split('.')
    for p in parents:
      node = getattr(node, p)
    setattr(node, leaf, v)
  return c


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b)))


def test_freeze_phase_keeps_backbone_bit_identical_then_unfreezes(photo_folder, tmp_path):
  c = _config(photo_folder, tmp_path, num_steps=5, freeze_steps=3, checkpoint_every=100)
  model = train.build_model(c)
  init = train.initial_variables(c, model, jax.random.key(c.seed))
  frozen = train.train_and_evaluate(c, str(tmp_path / 'a'), stop_at=3)
  assert _same(frozen.params['backbone'], init['params']['backbone'])
  assert _same(frozen.batch_stats, init['batch_stats'])
  assert not _same(frozen.params['box'], init['params']['box'])
  # Two more steps in phase 2, resumed from that checkpoint: the backbone moves.
  thawed = train.train_and_evaluate(c, str(tmp_path / 'a'))
  assert int(thawed.step) == 5
  assert not _same(thawed.params['backbone'], init['params']['backbone'])
  assert not _same(thawed.batch_stats, init['batch_stats'])


def test_resume_reproduces_an_uninterrupted_run(photo_folder, tmp_path):
  c = _config(photo_folder, tmp_path, num_steps=6, freeze_steps=3, checkpoint_every=2)
  straight = train.train_and_evaluate(c, str(tmp_path / 'straight'))
  # Stop in the middle (at the phase switch, the hard case), then start again.
  train.train_and_evaluate(c, str(tmp_path / 'resumed'), stop_at=3)
  resumed = train.train_and_evaluate(c, str(tmp_path / 'resumed'))
  assert int(resumed.step) == int(straight.step) == 6
  np.testing.assert_array_equal(_leaves(resumed.params)[0], _leaves(straight.params)[0])
  assert _same(resumed.params, straight.params)
  assert _same(resumed.batch_stats, straight.batch_stats)
  events = [f for f in os.listdir(tmp_path / 'straight') if f.startswith('events.out.tfevents')]
  assert events  # TensorBoard events were written


def test_param_groups_must_cover_every_parameter(photo_folder, tmp_path):
  c = _config(photo_folder, tmp_path)
  params = train.initial_variables(c, train.build_model(c), jax.random.key(0))['params']
  labels = train.param_labels(params, dict(c.param_groups))
  assert set(jax.tree_util.tree_leaves(labels)) == {'head', 'backbone'}
  with pytest.raises(train.ConfigError, match='parameters in no group.*is_swapped'):
    train.param_labels(params, {'backbone': r'backbone/.*', 'head': r'(is_pair|box)/.*'})
  with pytest.raises(train.ConfigError, match="match nothing.*'heads/.*'"):
    train.param_labels(params, {'backbone': r'.*', 'head': r'heads/.*'})
  with pytest.raises(train.ConfigError, match='several groups'):
    train.param_labels(params, {'backbone': r'.*', 'head': r'box/.*'})


def test_bad_configuration_fails_at_start(photo_folder, tmp_path):
  with pytest.raises(train.ConfigError, match="unknown architecture 'resnet17'"):
    train.train_and_evaluate(_config(photo_folder, tmp_path, **{'model.arch': 'resnet17'}),
                             str(tmp_path / 'w1'))
  with pytest.raises(train.ConfigError, match='no-such-dir: no such directory'):
    train.train_and_evaluate(_config(photo_folder, tmp_path,
                                     **{'init.checkpoint': str(tmp_path / 'no-such-dir')}),
                             str(tmp_path / 'w2'))
  with pytest.raises(train.ConfigError, match='num_steps must be at least 1, got 0'):
    train.train_and_evaluate(_config(photo_folder, tmp_path, num_steps=0, freeze_steps=0),
                             str(tmp_path / 'w3'))
  assert not os.path.exists(tmp_path / 'w1' / 'checkpoints' / '1')


def test_resuming_a_checkpoint_of_another_config_is_a_clear_error(photo_folder, tmp_path):
  c = _config(photo_folder, tmp_path, num_steps=2, freeze_steps=0)
  train.train_and_evaluate(c, str(tmp_path / 'w'))
  other = _config(photo_folder, tmp_path, num_steps=4, freeze_steps=0,
                  **{'model.pair_head': 'match'})
  with pytest.raises(checkpoint.CheckpointError, match=r'checkpoints/2: its training state does '
                     'not fit.*train in a new workdir'):
    train.train_and_evaluate(other, str(tmp_path / 'w'))
  assert sorted(os.listdir(tmp_path / 'w' / 'checkpoints')) == ['2']  # left as it was


def test_warmup_as_long_as_the_run_is_all_warmup():
  c = tiny.get_config()
  c.num_steps = c.warmup_steps = 4
  labels = {'w': 'head'}
  tx = train.make_optimizer(c, labels, 2)
  params = {'w': jax.numpy.ones(3)}
  state = tx.init(params)
  rates = []
  for _ in range(4):
    updates, state = tx.update({'w': jax.numpy.ones(3)}, state, params)
    rates.append(float(-updates['w'][0]))
  assert rates[0] == 0.0 and rates[1] > 0 and rates == sorted(rates)  # rising: still warming up


def _run(tx, grads, state, params):
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return state, params


def test_the_schedule_is_optax_adamw_and_its_span_can_be_shortened():
  c = tiny.get_config()
  c.num_steps, c.warmup_steps, c.learning_rate, c.weight_decay = 10, 3, 0.1, 0.05
  rng = np.random.default_rng(0)
  grads = [{'w': jax.numpy.asarray(rng.normal(size=5), jax.numpy.float32)} for _ in range(10)]
  params = {'w': jax.numpy.asarray(rng.normal(size=5), jax.numpy.float32)}

  def reference(total):
    schedule = optax.warmup_cosine_decay_schedule(0.0, c.learning_rate, 3, total)
    return optax.chain(optax.clip_by_global_norm(c.grad_clip),
                       optax.adamw(schedule, weight_decay=c.weight_decay))
  ours = train.make_optimizer(c, {'w': 'head'}, 2)
  state, p = _run(ours, grads, ours.init(params), params)
  _, q = _run(reference(10), grads, reference(10).init(params), params)
  np.testing.assert_allclose(p['w'], q['w'], rtol=1e-5, atol=1e-7)
  assert train.schedule_total(state) == 10
  # Shortened to 6 after 4 steps (as a time budget does): what a 6-step schedule gives, and
  # nothing moves after its end.
  state, p = _run(ours, grads[:4], ours.init(params), params)
  state = train.with_total(state, 6)
  assert train.schedule_total(state) == 6
  state, p = _run(ours, grads[4:6], state, p)
  _, q = _run(reference(6), grads[:6], reference(6).init(params), params)
  np.testing.assert_allclose(p['w'], q['w'], rtol=1e-5, atol=1e-7)
  updates, _ = ours.update(grads[6], state, p)
  assert not np.any(np.asarray(updates['w']))


@pytest.mark.parametrize('elapsed', [0.0, 100.0, 400.0])
def test_steps_in_budget_fill_the_time_left_and_no_more(elapsed):
  plan = dict(budget_s=600.0, elapsed_s=elapsed, done=100, step_s=0.5, eval_s=10.0,
              eval_every=100, num_steps=5000)
  n = train.steps_in_budget(**plan)

  def needs(steps):  # the time the whole run takes with `steps` steps
    more = steps - plan['done']
    return elapsed + plan['eval_s'] + more * (plan['step_s'] + plan['eval_s'] / plan['eval_every'])
  room = plan['budget_s'] * (1 - train.BUDGET_MARGIN)
  assert plan['done'] < n < plan['num_steps']
  assert needs(n) <= room < needs(n + 1)
  # Enough time: the configured steps; none left: stop where it is.
  assert train.steps_in_budget(**{**plan, 'budget_s': 1e6}) == 5000
  assert train.steps_in_budget(**{**plan, 'budget_s': 10.0}) == 100


def _spans(opt_state):
  """The span of each parameter group's schedule (the heads' and, once unfrozen, the
  backbone's)."""
  return {train.schedule_total(inner) for inner in opt_state.inner_states.values()} - {None}


def test_a_time_budget_sets_the_span_once_and_a_resume_keeps_it(photo_folder, tmp_path,
                                                                 monkeypatch):
  c = _config(photo_folder, tmp_path, num_steps=10, freeze_steps=4, checkpoint_every=100,
              eval_every=100, train_minutes=1.0)
  monkeypatch.setattr(train, 'CALIBRATION_STEPS', 3)
  plans = []

  def plan(**kw):
    plans.append(kw)
    return 7
  monkeypatch.setattr(train, 'steps_in_budget', plan)
  # Planned at step 3, stopped at 5 (after unfreezing at 4), then resumed: planned once, and
  # every schedule (the heads' and the backbone's, made at unfreezing) spans 7 to the end.
  train.train_and_evaluate(c, str(tmp_path / 'w'), stop_at=5)
  (kw,) = plans
  assert kw['done'] == 3 and kw['num_steps'] == 10 and kw['budget_s'] == 60.0
  assert kw['step_s'] > 0 and kw['eval_s'] > 0 and kw['elapsed_s'] > 0
  resumed = train.train_and_evaluate(c, str(tmp_path / 'w'))
  assert len(plans) == 1 and int(resumed.step) == 7 and _spans(resumed.opt_state) == {7}
  # Without a budget the configured span, whatever a checkpoint held.
  c.train_minutes = 0.0
  thawed = train.train_and_evaluate(c, str(tmp_path / 'w'))
  assert int(thawed.step) == 10 and _spans(thawed.opt_state) == {10}


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(photo_folder, tmp_path):
  c = _config(photo_folder, tmp_path, num_steps=4, freeze_steps=0, checkpoint_every=2)
  train.train_and_evaluate(c, str(tmp_path / 'w'), stop_at=2)
  c.loss_weights.l1 = float('nan')
  with pytest.raises(FloatingPointError, match=r'at step 3.*step 2\)'):
    train.train_and_evaluate(c, str(tmp_path / 'w'))
  assert sorted(os.listdir(tmp_path / 'w' / 'checkpoints')) == ['2']


def test_imagenet_init_merges_strictly_and_freezes(photo_folder, tmp_path):
  # Converted 'tiny' weights as scripts/convert_weights.py would save them (RGB stem).
  rgb = models.init(models.TinyResNet(num_classes=10), jax.random.key(3), 32)
  path = weights.save(rgb, tmp_path / 'w', arch='tiny')
  c = _config(photo_folder, tmp_path, num_steps=2, freeze_steps=2, **{'init.checkpoint': path})
  state = train.train_and_evaluate(c, str(tmp_path / 'run'))
  expected = weights.expand_stem(rgb, 6)
  assert _same(state.params['backbone'], {k: v for k, v in expected['params'].items() if k != 'fc'})
  assert _same(state.batch_stats['backbone'], expected['batch_stats'])
  # Another architecture's weights are refused with the mismatches listed.
  other = models.init(models.TinyBottleneckResNet(num_classes=10), jax.random.key(3), 32)
  path2 = weights.save(other, tmp_path / 'w2', arch='tiny')
  with pytest.raises(train.ConfigError, match='does not fit the backbone.*conv3'):
    train.train_and_evaluate(_config(photo_folder, tmp_path, **{'init.checkpoint': path2}),
                             str(tmp_path / 'run2'))


def test_a_converted_checkpoint_loads_into_the_matching_encoder_unchanged(photo_folder, tmp_path):
  rgb = models.init(models.TinyResNet(num_classes=10), jax.random.key(3), 32)
  path = weights.save(rgb, tmp_path / 'w', arch='tiny')
  c = _config(photo_folder, tmp_path, num_steps=2, freeze_steps=2,
              **{'init.checkpoint': path, 'model.pair_head': 'match',
                 'data.pair_options.keep_aspect': True})
  state = train.train_and_evaluate(c, str(tmp_path / 'run'))
  # The 3-channel stem as converted; the encoder stops after layer3, so fc and layer4 stay out.
  kept = lambda tree: {k: v for k, v in tree.items() if k != 'fc' and not k.startswith('layer4')}
  assert state.params['backbone']['stem_conv']['kernel'].shape[2] == 3
  assert _same(state.params['backbone'], kept(rgb['params']))
  assert _same(state.batch_stats['backbone'], kept(rgb['batch_stats']))
  assert set(state.params) == {'backbone', 'match_proj', 'match_temperature', 'is_pair',
                               'is_swapped'}
  with pytest.raises(train.ConfigError, match="pair_head: 'both'"):
    train.train_and_evaluate(_config(photo_folder, tmp_path, **{'model.pair_head': 'both'}),
                             str(tmp_path / 'run2'))


def test_data_parallel_matches_one_device(photo_folder, tmp_path):
  """The same global batch on 1 device, on 4 forced CPU devices, and in 2 processes on localhost."""
  script = textwrap.dedent(f'''
    import os, sys, numpy as np, jax
    sys.path.insert(0, {ROOT!r})
    from configs import tiny
    from cropjax import train
    out, workdir, process, processes, port = sys.argv[1:6]
    if int(processes) > 1:
      train.initialize_distributed('localhost:' + port, int(processes), int(process))
    c = tiny.get_config()
    c.data.source = {str(photo_folder)!r}
    c.data.data_dir = workdir + '-tfds' + process  # tfds builds race if they share a folder
    c.num_steps, c.freeze_steps = 2, 1
    if jax.device_count() == 4:
      c.batch_size = 6
      try:
        train.train_and_evaluate(c, workdir + '-bad')
      except train.ConfigError as e:
        print('CONFIGERROR', e)
      c.batch_size = 8
    s = train.train_and_evaluate(c, workdir)
    if jax.process_index() == 0:
      leaves = jax.device_get(jax.tree_util.tree_leaves((s.params, s.batch_stats)))
      np.savez(out, *[np.asarray(x) for x in leaves])
    print('PROCESSES', jax.process_count(), 'DEVICES', jax.device_count())
  ''')
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    port = str(sock.getsockname()[1])

  def launch(name, devices, process=0, processes=1):
    env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
    return subprocess.Popen([sys.executable, '-c', script, str(tmp_path / f'{name}.npz'),
                             str(tmp_path / f'wd-{name}'), str(process), str(processes), port],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

  def finish(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out

  four = launch('four', 4)
  # The reference: the same run in this process, on its one device.
  c = _config(photo_folder, tmp_path, num_steps=2, freeze_steps=1)
  assert jax.device_count() == 1
  s = train.train_and_evaluate(c, str(tmp_path / 'wd-one'))
  reference = dict(enumerate(_leaves((s.params, s.batch_stats))))
  four = finish(four)
  assert 'CONFIGERROR' in four and 'not divisible by the 4 devices' in four
  both = [launch('two', 1, i, 2) for i in range(2)]
  assert all('PROCESSES 2 DEVICES 2' in finish(p) for p in both)
  for name in ('four', 'two'):
    other = np.load(tmp_path / f'{name}.npz')
    assert len(other.files) == len(reference)
    for k, ref in reference.items():
      np.testing.assert_allclose(other[f'arr_{k}'], ref, rtol=2e-4, atol=2e-5, err_msg=name)


@pytest.fixture(scope='module')
def crop_dataset(tmp_path_factory):
  from cropjax import annotate
  from cropjax import demo_library
  root = tmp_path_factory.mktemp('crops')
  demo_library.make_library(root / 'lib', count=40, seed=5, long_side=128)
  annotate.annotate([root / 'lib'], root / 'ds', 64, report=lambda problem: None)
  return root / 'ds'


def test_autocrop_freezes_then_trains_and_writes_crop_summaries(crop_dataset, tmp_path):
  c = autocrop_tiny.get_config()
  c.data.source = str(crop_dataset)
  c.data.data_dir = str(tmp_path / 'tfds')
  c.num_steps, c.freeze_steps, c.checkpoint_every, c.max_angle = 5, 3, 100, 20.0
  model = train.build_model(c)
  assert model.max_angle == 20.0 and model.backbone.in_channels == 3
  assert model.crop_head == 'inside' and model.backbone.outputs == (1, 2, 4)  # configs/autocrop.py
  for key, bad, message in (('crop_head', 'corners', "crop_head: 'corners'"),
                            ('crop_levels', (1, 2), 'ending with 4'),
                            ('crop_levels', (2, 1, 4), 'increasing')):
    wrong = autocrop_tiny.get_config()
    wrong.model[key] = bad
    with pytest.raises(train.ConfigError, match=message):
      train.build_model(wrong)
  init = train.initial_variables(c, model, jax.random.key(c.seed))
  assert set(init['params']) == {'backbone', 'crop', 'angle'}
  frozen = train.train_and_evaluate(c, str(tmp_path / 'a'), stop_at=3)
  assert _same(frozen.params['backbone'], init['params']['backbone'])
  assert _same(frozen.batch_stats, init['batch_stats'])
  assert not _same(frozen.params['crop'], init['params']['crop'])
  assert not _same(frozen.params['crop']['inside'], init['params']['crop']['inside'])
  assert not _same(frozen.params['angle'], init['params']['angle'])
  thawed = train.train_and_evaluate(c, str(tmp_path / 'a'))
  assert int(thawed.step) == 5
  assert not _same(thawed.params['backbone'], init['params']['backbone'])
  # The best checkpoint is chosen by the crop IoU; image summaries are the crops.
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(tmp_path / 'a'), size_guidance={'tensors': 0})
  acc.Reload()
  tags = set(acc.Tags()['tensors'])
  assert {'val_crop_iou', 'val_angle_error', 'val_boundary_error', 'val_crops'} <= tags
  width, height = acc.Tensors('val_crops')[0].tensor_proto.string_val[:2]
  assert int(width) == 2 * int(height) == 2 * c.image_size  # each photo, and its inside map beside it
  with pytest.raises(train.ConfigError, match="unknown task 'crops'"):
    c.task = 'crops'
    train.build_model(c)


def test_orbax_info_is_dropped_and_its_warnings_kept():
  import logging as std_logging
  from absl import logging
  train._quiet_orbax()
  train._quiet_orbax()  # once only
  handler = logging.get_absl_handler().python_handler
  assert sum(getattr(f, 'cropjax', False) for f in handler.filters) == 1

  def record(level, path):
    return std_logging.LogRecord('absl', level, path, 1, 'saved', None, None)

  orbax = '/site-packages/orbax/checkpoint/checkpoint_manager.py'
  assert not handler.filter(record(std_logging.INFO, orbax))
  assert handler.filter(record(std_logging.WARNING, orbax))
  assert handler.filter(record(std_logging.INFO, '/work/cropjax/train.py'))


def test_data_threads_follow_the_config_and_the_backend(monkeypatch):
  from cropjax import tasks
  c = tiny.get_config()
  assert c.data.threads == 0
  monkeypatch.setattr(os, 'cpu_count', lambda: 2)
  assert tasks.data_threads(c) == (1 if jax.default_backend() == 'cpu' else 0)
  monkeypatch.setattr(os, 'cpu_count', lambda: 16)
  assert tasks.data_threads(c) == (4 if jax.default_backend() == 'cpu' else 0)
  c.data.threads = 3
  assert tasks.data_threads(c) == 3
  c.data.threads = -1
  with pytest.raises(ValueError, match='config.data.threads'):
    tasks.data_threads(c)
