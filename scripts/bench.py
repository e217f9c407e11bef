"""cropjax next to PyTorch on this machine, measured in one process.

    python scripts/bench.py                        # all sections, all sizes
    python scripts/bench.py --sections train --configs resnet18@64 --seconds 2
    python scripts/bench.py --sections convs       # per-convolution formulations

Sections (each a function registered in SECTIONS, so later work adds its own):
  matmul   float32 matrix-product peak of JAX and of torch, the yardstick;
  train    the pair model's train step (6-channel ResNet backbone, is_pair /
           is_swapped / bounded box heads, cross-entropy + L1 + GIoU, SGD with
           momentum, BatchNorm statistics updated) in cropjax and in an
           equivalent PyTorch eager step (channels_last);
  forward  the same models in inference mode;
  convs    each convolution of ResNet-18 at 64 px in each formulation (XLA,
           im2col, matmul, oneDNN) and in the plan cropjax chooses;
  pipeline crop pairs/s of the tf.data generator next to the train step's need;
  loop     the real training loop (configs/demo.py) next to its bare step;
  predict  cropjax.predict batched and one at a time next to OpenCV SIFT;
  search   library search (cropjax.search) with a trained model on the
           real-photo yardstick among procedural distractors, beside
           imagehash's pHash and crop-resistant hash (not default);
  rerank   development queries (not the yardstick's) for the number of
           photos search re-ranks (not default);
  build    an index build next to imagehash's pHash over the same files, on
           camera-size photographs and on web-size ones (not default);
  neighbours retrieval latency on synthetic descriptors: numpy, faiss flat and
           HNSW (not default).

Frameworks are timed in alternating rounds and the median round is reported,
so drift on a shared machine hits both. FLOPs per example come from XLA's cost
analysis of the compiled cropjax computation and are used for both frameworks.
Memory: the compiled step's working set from XLA's memory analysis
(arguments + outputs + temporaries) next to the peak of torch's live
allocations during one step (torch.profiler; on a GPU, CUDA's peak), plus the
process's peak RSS. Where JAX runs on a GPU, torch runs there too (TF32, cuDNN
autotuned; `--torch-device`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable, Iterator

import numpy as np

os.environ.setdefault('KINETO_LOG_LEVEL', '5')  # keep torch.profiler quiet
# torchvision must load before TensorFlow (see tests/conftest.py); nothing here
# imports TensorFlow, but keep the order for sections added later.
import torch
import torchvision

import jax
import jax.numpy as jnp
import optax

from cropjax import conv as conv_lib
from cropjax import heads
from cropjax import host_buffers
from cropjax import models
from cropjax import onednn

# Batch sizes per configuration: what a 2-core CPU can step through in seconds.
CONFIGS = {
    'resnet18@64': ('resnet18', 64, 64),
    'resnet18@128': ('resnet18', 128, 32),
    'resnet50@224': ('resnet50', 224, 16),
}


@dataclasses.dataclass
class Result:
  section: str
  config: str
  jax_rate: float           # examples/s (matmul: GFLOP/s)
  torch_rate: float
  flops_per_example: float = 0.0
  jax_mem: float = 0.0      # bytes
  torch_mem: float = 0.0

  @property
  def ratio(self) -> float:
    return self.jax_rate / self.torch_rate


def _timed(fn: Callable[[], Any], seconds: float, min_calls: int = 2) -> float:
  """Seconds per call of fn (which must block until its work is done)."""
  calls, start = 0, time.perf_counter()
  while calls < min_calls or time.perf_counter() - start < seconds:
    fn()
    calls += 1
  return (time.perf_counter() - start) / calls


def _alternate(jax_fn, torch_fn, seconds: float, rounds: int) -> tuple[float, float]:
  """Median seconds per call of each, timed in alternating rounds."""
  j, t = [], []
  for _ in range(rounds):
    t.append(_timed(torch_fn, seconds))
    j.append(_timed(jax_fn, seconds))
  return statistics.median(j), statistics.median(t)


# ----------------------------------------------------------------------------- JAX


def _jax_pair_model(arch: str, dtype) -> heads.PairModel:
  return heads.PairModel(models.get(arch, num_classes=None, in_channels=6, dtype=dtype))


def _pair_batch(batch: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  x0 = rng.uniform(0, 0.5, (batch, 2))
  x1 = x0 + rng.uniform(0.1, 0.5, (batch, 2))
  return {
      'image': rng.standard_normal((batch, size, size, 6)).astype(np.float32),
      'is_pair': rng.integers(0, 2, batch).astype(np.int32),
      'is_swapped': rng.integers(0, 2, batch).astype(np.int32),
      'box': np.concatenate([x0, x1], 1).astype(np.float32),
  }


def _jax_train(arch: str, size: int, batch: int, dtype):
  model = _jax_pair_model(arch, dtype)
  variables = models.init_variables(model, jax.random.key(0), jnp.zeros((1, size, size, 6)),
                                    train=False)
  tx = optax.sgd(0.01, momentum=0.9)
  state = (variables['params'], variables['batch_stats'], tx.init(variables['params']))

  def step(state, batch):
    params, batch_stats, opt_state = state

    def loss_fn(p):
      out, updates = model.apply({'params': p, 'batch_stats': batch_stats}, batch['image'],
                                 train=True, mutable=['batch_stats'])
      loss, _ = heads.pair_loss(out, batch)
      return loss, updates['batch_stats']

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), new_stats, opt_state), loss

  data = jax.device_put(_pair_batch(batch, size))
  compiled = jax.jit(step, donate_argnums=0).lower(state, data).compile()
  holder = [jax.device_put(state)]

  def run():
    holder[0], loss = compiled(holder[0], data)
    loss.block_until_ready()

  run()
  return run, compiled, _flops_without_onednn(step, state, data)


def _jax_forward(arch: str, size: int, batch: int, dtype):
  model = _jax_pair_model(arch, dtype)
  variables = models.init_variables(model, jax.random.key(0), jnp.zeros((1, size, size, 6)),
                                    train=False)
  images = jax.device_put(_pair_batch(batch, size)['image'])
  forward = lambda v, x: model.apply(v, x, train=False)
  compiled = jax.jit(forward).lower(variables, images).compile()

  def run():
    jax.block_until_ready(compiled(variables, images))

  run()
  return run, compiled, _flops_without_onednn(forward, variables, images)


def _flops_without_onednn(fn, *args) -> float:
  """XLA's FLOP count of fn, planned without oneDNN (XLA cannot see into custom calls)."""
  with onednn.disabled():  # a fresh function, so that jit traces it again
    return _xla_flops(jax.jit(lambda *a: fn(*a)).lower(*args))


def _xla_flops(compiled) -> float:
  """FLOPs of a compiled or lowered computation, by XLA's cost analysis (of the compiled
  program where a backend does not analyse lowered ones, as on GPUs)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  flops = float(cost.get('flops', 0.0)) if cost else 0.0
  if not flops and hasattr(compiled, 'compile'):
    return _xla_flops(compiled.compile())
  return flops


def _xla_memory(compiled) -> float:
  mem = compiled.memory_analysis()
  if mem is None:
    return 0.0
  return float(mem.argument_size_in_bytes + mem.output_size_in_bytes
               + mem.temp_size_in_bytes - mem.alias_size_in_bytes)


# --------------------------------------------------------------------------- torch


class _TorchPairModel(torch.nn.Module):
  """torchvision backbone with a 6-channel stem and the same three heads."""

  def __init__(self, arch: str):
    super().__init__()
    self.backbone = getattr(torchvision.models, arch)(weights=None)
    self.backbone.conv1 = torch.nn.Conv2d(6, 64, 7, 2, 3, bias=False)
    features = self.backbone.fc.in_features
    self.backbone.fc = torch.nn.Identity()
    self.is_pair = torch.nn.Linear(features, 2)
    self.is_swapped = torch.nn.Linear(features, 2)
    self.box = torch.nn.Linear(features, 6)

  def forward(self, x):
    f = self.backbone(x)
    parts = torch.softmax(self.box(f).view(-1, 2, 3), -1)
    box = torch.cat([parts[..., 0], parts[..., 0] + parts[..., 1]], -1)
    return self.is_pair(f), self.is_swapped(f), box


def _torch_giou(a, b):
  inter_wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
  inter = inter_wh[:, 0] * inter_wh[:, 1]
  area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
  union = area(a) + area(b) - inter
  hull_wh = torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])
  hull = hull_wh[:, 0] * hull_wh[:, 1]
  return inter / union.clamp(min=1e-9) - (hull - union) / hull.clamp(min=1e-9)


# Where the torch side runs: 'cpu', or 'cuda' when JAX runs on a GPU and torch sees one
# (main() sets it from --torch-device), so that both frameworks use the same processor.
TORCH_DEVICE = ['cpu']


def _torch_sync() -> None:
  """Waits for torch's queued GPU work (torch on the CPU returns when done)."""
  if TORCH_DEVICE[0] != 'cpu':
    torch.cuda.synchronize()


def _torch_batch(batch: int, size: int):
  b = _pair_batch(batch, size)
  image = torch.from_numpy(b['image'].transpose(0, 3, 1, 2)).contiguous(
      memory_format=torch.channels_last).to(TORCH_DEVICE[0])
  return image, {k: torch.from_numpy(v).to(TORCH_DEVICE[0]) for k, v in b.items() if k != 'image'}


def _torch_train(arch: str, size: int, batch: int):
  model = _TorchPairModel(arch).to(TORCH_DEVICE[0], memory_format=torch.channels_last).train()
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  image, labels = _torch_batch(batch, size)
  ce = torch.nn.functional.cross_entropy

  def run():
    opt.zero_grad(set_to_none=True)
    is_pair, is_swapped, box = model(image)
    pos = labels['is_pair'].float()
    n_pos = pos.sum().clamp(min=1)
    loss = (ce(is_pair, labels['is_pair'].long())
            + (ce(is_swapped, labels['is_swapped'].long(), reduction='none') * pos).sum() / n_pos
            + 5 * ((box - labels['box']).abs().mean(-1) * pos).sum() / n_pos
            + 2 * ((1 - _torch_giou(box, labels['box'])) * pos).sum() / n_pos)
    loss.backward()
    opt.step()
    _torch_sync()

  run()
  return run


def _torch_forward(arch: str, size: int, batch: int):
  model = _TorchPairModel(arch).to(TORCH_DEVICE[0], memory_format=torch.channels_last).eval()
  image, _ = _torch_batch(batch, size)

  def run():
    with torch.inference_mode():
      model(image)
    _torch_sync()

  run()
  return run


def _torch_peak_bytes(fn) -> float:
  """Peak of live allocations (CPU, or the GPU's when torch runs there) made while fn runs once."""
  if TORCH_DEVICE[0] != 'cpu':
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    return float(torch.cuda.max_memory_allocated() - before)
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                              profile_memory=True) as prof:
    fn()
  # Allocations are charged to the op that made them, frees to '[memory]' events.
  events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                  if e.self_cpu_memory_usage)
  live = peak = 0
  for _, delta in events:
    live += delta
    peak = max(peak, live)
  return float(peak)


# -------------------------------------------------------------------------- sections


def section_matmul(args) -> list[Result]:
  n = 2048
  a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
  ja, ta = jnp.asarray(a), torch.from_numpy(a).to(TORCH_DEVICE[0])
  f = jax.jit(lambda x: x @ x)

  def torch_matmul():
    ta @ ta
    _torch_sync()

  jax_s, torch_s = _alternate(lambda: f(ja).block_until_ready(), torch_matmul,
                              args.seconds / 2, args.rounds)
  flops = 2 * n**3
  return [Result('matmul', f'{n}x{n}x{n} f32', flops / jax_s / 1e9, flops / torch_s / 1e9)]


def _model_section(name: str, jax_builder, torch_builder, args) -> list[Result]:
  dtype = jnp.bfloat16 if args.dtype == 'bfloat16' else jnp.float32
  out = []
  for config in args.configs:
    arch, size, batch = CONFIGS[config]
    batch = args.batch or batch
    jax_run, compiled, flops = jax_builder(arch, size, batch, dtype)
    torch_run = torch_builder(arch, size, batch)
    jax_s, torch_s = _alternate(jax_run, torch_run, args.seconds, args.rounds)
    r = Result(name, config, batch / jax_s, batch / torch_s,
               flops_per_example=flops / batch,
               jax_mem=_xla_memory(compiled), torch_mem=_torch_peak_bytes(torch_run))
    out.append(r)
    _print_row(r, args)
  return out


def section_train(args) -> list[Result]:
  return _model_section('train', _jax_train, _torch_train, args)


def section_forward(args) -> list[Result]:
  return _model_section('forward', _jax_forward, _torch_forward, args)


def section_convs(args) -> list[Result]:
  """ResNet-18's convolutions at 64 px, batch 64: forward + both gradients."""
  batch, size, out = 64, 64, []
  layers = [(size, 6, 64, 7, 2)]
  hw = size // 4
  layers.append((hw, 64, 64, 3, 1))
  for cin, cout in [(64, 128), (128, 256), (256, 512)]:
    layers += [(hw, cin, cout, 3, 2), (hw, cin, cout, 1, 2)]
    hw //= 2
    layers.append((hw, cout, cout, 3, 1))
  with_onednn = onednn.available()
  print(f'{"convolution (batch 64)":34s} {"xla GFLOP/s":>12s} {"im2col":>8s} {"matmul":>8s} '
        f'{"onednn":>8s} {"plan":>8s}  (plan: forward/input grad/kernel grad)')
  rng = np.random.default_rng(0)
  for hw, cin, cout, k, s in layers:
    pad = ((k // 2, k // 2),) * 2
    x = jnp.asarray(rng.standard_normal((batch, hw, hw, cin)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, cin, cout)) * 0.05, jnp.float32)
    oh = (hw + 2 * (k // 2) - k) // s + 1
    flops = 3 * 2 * batch * oh * oh * k * k * cin * cout  # forward + two gradients
    rates = {}
    auto = conv_lib.choose_impl((hw, hw), cin, (k, k), (s, s))
    impls = ['xla', 'im2col'] + (['matmul'] if k == 1 else []) + (['onednn'] if with_onednn else [])
    for impl in impls + ([auto] if auto not in impls else []):
      fn = functools.partial(conv_lib.conv, strides=(s, s), padding=pad, impl=impl)
      g = jax.jit(jax.grad(lambda x, w, fn=fn: jnp.sum(fn(x, w) ** 2), argnums=(0, 1)))
      jax.block_until_ready(g(x, w))
      rates[impl] = flops / _timed(lambda: jax.block_until_ready(g(x, w)), args.seconds / 4) / 1e9
    label = f'{hw}x{hw}x{cin} -> {cout}, {k}x{k}/{s}'
    nan = float('nan')
    print(f'{label:34s} {rates["xla"]:12.1f} {rates["im2col"]:8.1f} '
          f'{rates.get("matmul", nan):8.1f} {rates.get("onednn", nan):8.1f} {rates[auto]:8.1f}  {auto}')
    out.append(Result('convs', label, rates[auto], rates['xla']))
  return out


def section_pipeline(args) -> list[Result]:
  """Crop pairs per second from the tf.data pipeline on the 'demo' source, alone, and the
  CPU time (all threads of the process) it spends on one.

  Compared with the train step's examples/s at the same size (from the train
  section of this run, when it ran). Both compete for the same cores in a real
  run, so the pipeline should be comfortably faster than the step.
  """
  from cropjax.data import pairs  # imports TensorFlow, after torchvision
  demand = {CONFIGS[r.config][1]: r.jax_rate for r in _RESULTS if r.section == 'train'}
  out = []
  for size in sorted({CONFIGS[c][1] for c in args.configs}):
    batch = 32
    it = pairs.dataset('demo', image_size=size, batch_size=batch, seed=0).as_numpy_iterator()
    next(it)  # build the source and warm up
    cpu, wall = time.process_time(), time.perf_counter()
    rate = batch / _timed(lambda: next(it), args.seconds)
    cpu_us = 1e6 * (time.process_time() - cpu) / ((time.perf_counter() - wall) * rate)
    need = demand.get(size, float('nan'))
    print(f'pipeline {size:4d} px  {rate:8.1f} pairs/s  {cpu_us:6.0f} us CPU a pair  '
          f'train step needs {need:8.1f} ex/s  headroom {rate / need:5.1f}x', flush=True)
    out.append(Result('pipeline', f'{size}px', rate, need))
  return out


def section_loop(args) -> list[Result]:
  """The real training loop (input pipeline, step, metrics, checkpoints) next to its bare step.

  configs/demo.py as it is (ResNet-18 at 64 px, batch 32, its evaluation and
  checkpoint cadence) for `--loop-steps` steps in a temporary workdir; the
  loop's examples/s is the time-weighted mean (harmonic) of the rates it logs
  every 50 steps, the first window (compilation) dropped, so the windows with an
  evaluation or a checkpoint count in full. The bare step is the same jitted
  train step on one batch already on the device, timed in three rounds before
  the loop and three after; the fastest round is the reference. Columns: loop,
  bare.
  """
  import shutil
  import tempfile

  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from configs import demo
  from cropjax import train
  from tensorboard.backend.event_processing import event_accumulator

  c = demo.get_config()
  c.num_steps, c.log_every = args.loop_steps, 50
  mesh, replicated, data_sharding = train._mesh_and_shardings(c)
  model = train.build_model(c)
  variables = train.initial_variables(c, model, jax.random.key(0))
  labels = train.param_labels(variables['params'], dict(c.param_groups))
  tx = train.make_optimizer(c, labels, 2)
  state = jax.device_put(train.TrainState(jnp.zeros((), jnp.int32), variables['params'],
                                          variables['batch_stats'], tx.init(variables['params'])),
                         replicated)
  batch = _pair_batch(c.batch_size, c.image_size)
  batch['image'] = (np.clip(batch['image'] * 40 + 128, 0, 255)).astype(np.uint8)
  batch = train._global_batch(batch, data_sharding)
  step = jax.jit(train.make_train_step(c, model, tx, 2), donate_argnums=0)
  holder = [state]

  def run():
    holder[0], metrics = step(holder[0], batch)
    jax.block_until_ready(metrics)

  run()
  bare_before = [c.batch_size / _timed(run, args.seconds) for _ in range(3)]

  workdir = tempfile.mkdtemp(prefix='cropjax-bench-loop-')
  try:
    train.train_and_evaluate(c, workdir)
    acc = event_accumulator.EventAccumulator(workdir, size_guidance={'tensors': 0})
    acc.Reload()
    rates = [float(tf_make_ndarray(e.tensor_proto)) for e in acc.Tensors('examples_per_second')]
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  loop_rate = statistics.harmonic_mean(rates[1:]) if len(rates) > 1 else float('nan')

  # The bare step in three rounds before the loop and three after: this shared
  # machine's speed drifts by 5-10 %, and the fastest round is the reference.
  bare = bare_before + [c.batch_size / _timed(run, args.seconds) for _ in range(3)]
  bare_rate = max(bare)
  print(f'loop     demo (resnet18@64, b{c.batch_size})  loop {loop_rate:8.1f} ex/s  '
        f'bare step {bare_rate:8.1f} ex/s (rounds: {", ".join(f"{r:.0f}" for r in bare)})  '
        f'ratio {loop_rate / bare_rate:6.3f} (windows: {", ".join(f"{r:.0f}" for r in rates)})',
        flush=True)
  return [Result('loop', 'demo', loop_rate, bare_rate)]


def tf_make_ndarray(proto):
  import tensorflow as tf
  return tf.make_ndarray(proto)


def section_predict(args) -> list[Result]:
  """cropjax.predict_pairs with alignment, batched and one pair at a time, next to SIFT.

  Pairs: scikit-image photos at full size and JPEG-re-encoded crops of them
  (20-80 % per side), given as arrays, so both sides pay for their own
  resizing. The network is configs/demo.py's (ResNet-18 at 64 px) with random
  weights and a neutral verdict (speed depends on neither); SIFT runs at most
  512 px per side. Rows: aligned batched, aligned one at a time, the network
  alone (batched), each against SIFT: `--predict-rounds` rounds of all four,
  each ratio taken within a round, the median round's reported.
  """
  import io

  from PIL import Image

  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from configs import demo
  from cropjax import inference
  from cropjax import procedural
  from cropjax import sift
  from cropjax import train

  rng = np.random.default_rng(0)
  pairs = []
  for _, photo in procedural.skimage_photos():
    h, w = photo.shape[:2]
    cw, ch = int(w * rng.uniform(0.2, 0.8)), int(h * rng.uniform(0.2, 0.8))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    buf = io.BytesIO()
    Image.fromarray(photo[y:y + ch, x:x + cw]).save(buf, 'JPEG', quality=int(rng.integers(40, 95)))
    pairs.append((photo, np.asarray(Image.open(buf))))
  # Copies: every pair its own arrays, so nothing is shared between repeats of a photo.
  pairs = [(a.copy(), b.copy()) for a, b in (pairs * 4)[:args.predict_pairs]]
  c = demo.get_config()
  module = train.build_model(c)
  from cropjax.matching import verdict
  model = inference.Model(c, train.initial_variables(c, module, jax.random.key(0)), 'random', 0)
  n = len(verdict.FEATURES)
  model.__dict__['verdict'] = verdict.Verdict(verdict.FEATURES, (0.0,) * n, (1.0,) * n,
                                              (0.0,) * n, 0.0, 0, 'neutral, for timing')
  # Each way is called once before it is timed: its compilations (a few seconds for every
  # padded shape, more on a GPU) are not what a long-running caller pays per pair.
  network_fn = lambda: inference.predict_pairs(pairs, model=model, align=False)
  batched_fn = lambda: inference.predict_pairs(pairs, model=model)
  single_fn = lambda: [inference.predict(a, b, model=model) for a, b in pairs]
  for fn in (network_fn, batched_fn, single_fn):
    fn()
  found = []
  sift_fn = lambda: found.append([sift.match_pair(a, b) for a, b in pairs])
  # Rounds of all four, one after another: a shared machine's speed drifts by more than a
  # change is worth within a minute, so each ratio is taken within a round and the median
  # round's reported (rates likewise).
  rounds = {'network': [], 'batched': [], 'single': [], 'sift': []}
  for _ in range(max(1, args.predict_rounds)):
    for name, fn, calls in (('network', network_fn, 2), ('batched', batched_fn, 1),
                            ('single', single_fn, 1), ('sift', sift_fn, 1)):
      rounds[name].append(len(pairs) / _timed(fn, args.seconds, min_calls=calls))
  med = {k: statistics.median(v) for k, v in rounds.items()}
  ratio = {k: statistics.median(np.divide(rounds[k], rounds['sift'])) for k in rounds}
  hits = np.mean([r.is_pair for r in found[-1]])
  each = ', '.join(f'{b / t:.2f}x/{o / t:.2f}x'
                   for b, o, t in zip(rounds['batched'], rounds['single'], rounds['sift']))
  print(f'predict  {len(pairs)} pairs, medians of {len(rounds["sift"])} rounds  cropjax with '
        f'alignment: batched {med["batched"]:7.1f} pairs/s, one at a time {med["single"]:7.1f} '
        f'pairs/s; network alone {med["network"]:7.1f} pairs/s; SIFT {med["sift"]:6.1f} pairs/s '
        f'(found {hits:.0%}); aligned batched/SIFT {ratio["batched"]:5.2f}x, one at a time/SIFT '
        f'{ratio["single"]:5.2f}x (rounds: {each})', flush=True)
  # Result's ratio is rate / reference: the median round's ratio, at SIFT's median rate.
  return [Result('predict', 'aligned batched', ratio['batched'] * med['sift'], med['sift']),
          Result('predict', 'aligned one-at-a-time', ratio['single'] * med['sift'], med['sift']),
          Result('predict', 'network alone', ratio['network'] * med['sift'], med['sift']),
          *_predict_files(model, args)]


def _predict_files(model, args) -> list[Result]:
  """Pairs given as files, as a photographer has them: the installed yardstick photographs
  (camera JPEGs of 1-26 MP) and a JPEG crop of each (30-70 % a side, halved), batched, next to
  SIFT reading the same files as people do (`cv2.imread`, then at most 512 px). None of
  them installed: the row is left out, saying so."""
  import shutil
  import tempfile

  import cv2
  from PIL import Image

  from cropjax import inference
  from cropjax import sift
  from cropjax.datasets import yardstick
  if args.predict_files <= 0:
    return []
  paths = [p.path for p in yardstick.PHOTOS if os.path.isfile(p.path)][:args.predict_files]
  if not paths:
    print(f'predict  camera files skipped: no yardstick photos installed ({yardstick.INSTALL})',
          flush=True)
    return []
  rng = np.random.default_rng(0)
  root = tempfile.mkdtemp(prefix='cropjax-bench-files-')
  try:
    pairs = []
    for k, path in enumerate(paths):
      with Image.open(path) as im:
        im = im.convert('RGB')
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.3, 0.7)), int(h * rng.uniform(0.3, 0.7))
        x, y = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
        crop = im.crop((x, y, x + cw, y + ch)).resize((cw // 2, ch // 2), Image.Resampling.LANCZOS)
      crop.save(os.path.join(root, f'crop{k}.jpg'), quality=80)
      pairs.append((os.path.join(root, f'crop{k}.jpg'), path))
    run = lambda: inference.predict_pairs(pairs, model=model)
    run()
    rate = len(pairs) / _timed(run, args.seconds, min_calls=2)
    read = lambda p: cv2.imread(p, cv2.IMREAD_COLOR)[..., ::-1]
    sift_rate = len(pairs) / _timed(lambda: [sift.match_pair(read(a), read(b)) for a, b in pairs],
                                    args.seconds, min_calls=2)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(f'predict  {len(pairs)} pairs of camera files (crop, original): cropjax with alignment '
        f'{rate:6.1f} pairs/s, SIFT {sift_rate:6.1f} pairs/s: {rate / sift_rate:5.2f}x',
        flush=True)
  return [Result('predict', 'aligned batched, camera files', rate, sift_rate)]


def section_search(args) -> list[Result]:
  """cropjax.search on a library of the yardstick's photos (or `--search-photo-dir`'s: your own)
  and `--search-distractors` procedural photos (1024 x 768 JPEGs), with `--search-model` (a
  trained siamese model).

  Queries: two crops of each yardstick photo of 10-85 % of the area and one of
  5-10 % (aspect 0.7-1.4, resized 0.5-1x, JPEG 30-95), one straightened crop (10-85 %,
  turned 0.5-8 degrees either way and exported upright), and as negatives one
  mirrored crop per photo and procedural photos not in the library. Reports the
  index build (photos/s, bytes a photo), retrieval latency and recall of the
  right photo among the candidates, and after verification recall@1 per area
  band, precision of the reported pairs and the top-left error (the queries go
  through twice: latencies are the second pass's, a warm process's, with the first
  pass's verified query, compiling included, beside it, and the warm pass again with every
  candidate verified, `find(verify_all=True)`, the way before a query's best candidate went
  first); then, where
  imagehash is installed (the `bench` extra), its pHash and crop-resistant hash
  on the same files and queries (`_imagehash_peers`) and the index build's
  photos/s over pHash's (`Image.open` + `phash`) measured in the same run.
  """
  import shutil
  import tempfile

  from PIL import Image

  from cropjax import inference
  from cropjax import procedural
  from cropjax import search
  from cropjax.datasets import yardstick
  from cropjax.search import rerank

  model = inference.load_model(args.search_model, task='pairs')
  if args.search_rerank is None:
    args.search_rerank = search.RERANK
  if args.search_photo_dir:  # your own photos in the yardstick's place (named photo000, ...)
    own, skipped = yardstick.own_photos(args.search_photo_dir)
    for path, why in skipped:
      print(f'search   skipped {path}: {why}', flush=True)
    photos = [(f'photo{k:03d}', im) for k, (_, im) in enumerate(own)]
    whose = 'your own'
  else:
    photos = yardstick.photos()
    whose = 'yardstick'
  root = tempfile.mkdtemp(prefix='cropjax-bench-search-')
  try:
    lib, qdir = _search_library(root, photos, args.search_distractors)
    rng = np.random.default_rng(0)
    truth = {}  # query path -> (photo name or None, box, band)
    for name, im in photos:
      for band, (lo, hi), count in (('10-85 %', (0.10, 0.85), 2), ('5-10 %', (0.05, 0.10), 1),
                                    ('mirrored', (0.10, 0.85), 1)):
        for k in range(count):
          crop, box = _user_crop(im, lo, hi, rng)
          if band == 'mirrored':
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
          path = os.path.join(qdir, f'{name}-{band[:2]}{k}.jpg')
          crop.save(path, quality=int(rng.integers(30, 96)))
          truth[path] = (None if band == 'mirrored' else name, np.array(box), band)
    angles, turns = {}, np.random.default_rng(1)  # straightened query path -> its angle
    for name, im in photos:
      path = os.path.join(qdir, f'{name}-turned.jpg')
      crop, box, angles[path] = _straightened_crop(im, 0.10, 0.85, turns)
      crop.save(path, quality=int(turns.integers(30, 96)))
      truth[path] = (name, box, 'straightened')
    for i, a in enumerate(procedural.images(78, len(photos) // 2, (640, 480))):
      path = os.path.join(qdir, f'stranger{i:03d}.jpg')
      Image.fromarray(a).save(path, quality=85)
      truth[path] = (None, None, 'not in the library')
    start = time.perf_counter()
    index = search.update_index([lib], os.path.join(root, 'index'), model=model)
    build = len(index) / (time.perf_counter() - start)
    queries = sorted(truth)
    stem = lambda p: os.path.splitext(os.path.basename(p))[0]
    # The queries twice: the first pass compiles every padded shape once (what a single run of
    # cropjax-find pays, less what its compilation cache holds), the second is a warm process's.
    first_find_ms = {}
    for attempt in range(2):
      start = time.perf_counter()
      images = [search.descriptors.read_photo(q, max(index.settings['query_sides']))[0]
                for q in queries]
      described = search.descriptors.query_descriptors(images, model, index.settings)
      encode_ms = (time.perf_counter() - start) / len(queries) * 1e3
      start = time.perf_counter()
      by_descriptor = search.candidates(index, described, args.search_top)
      retrieval_ms = (time.perf_counter() - start) / len(queries) * 1e3
      greys = [rerank.query_grey(im, 2 * index.settings['thumb_side']) for im in images]
      runs = {}  # re-ranked count -> (shortlist ms, shortlists, matches, find ms)
      for rerank_count in [args.search_rerank] + [k for k in args.search_also_rerank
                                                  if k != args.search_rerank]:
        start = time.perf_counter()
        found = search.shortlist(index, described, greys, args.search_top, rerank_count)
        shortlist_ms = (time.perf_counter() - start) / len(queries) * 1e3
        start = time.perf_counter()
        matches, _ = search.find(index, queries, model=model, top=args.search_top,
                                 rerank=rerank_count)
        runs[rerank_count] = (shortlist_ms, found, matches,
                              (time.perf_counter() - start) / len(queries) * 1e3)
        if attempt == 0:
          first_find_ms[rerank_count] = runs[rerank_count][3]
        elif rerank_count == args.search_rerank:  # warm: every candidate verified, as before
          start = time.perf_counter()
          every, _ = search.find(index, queries, model=model, top=args.search_top,
                                 rerank=rerank_count, verify_all=True)
          every_ms = (time.perf_counter() - start) / len(queries) * 1e3
          key = lambda m: (m.query, m.original)
          every_same = sorted(map(key, every)) == sorted(map(key, matches))
    library = [p.path for p in index.photos]
    few = args.search_crop_resistant_photos
    distractors = [p for p in library if os.path.basename(p).startswith('distractor')]
    peers = _imagehash_peers(library, queries, [p for p in library if p not in set(distractors)]
                             + distractors[:few] if few else None)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(f'search   library {len(index)} photos ({len(photos)} {whose} + '
        f'{args.search_distractors} distractors): index {build:.1f} photos/s, '
        f'{index.bytes_per_photo / 1024:.1f} KiB/photo; a query: reading and encoding '
        f'{encode_ms:.0f} ms, the top {args.search_top} by descriptor {retrieval_ms:.0f} ms',
        flush=True)

  def ranks(lists, band):
    out = []
    for q, c in zip(queries, lists):
      names = [stem(index.photos[k].path) for k, _ in c]
      if truth[q][2] == band:
        out.append(names.index(truth[q][0]) if truth[q][0] in names else None)
    return out
  negatives = [q for q in queries if truth[q][0] is None]
  for rerank_count, (shortlist_ms, found, matches, find_ms) in runs.items():
    first = {}
    for m in matches:
      first.setdefault(m.query, m)
    right = [m for m in matches if truth[m.query][0] == stem(m.original)]
    label = f'search   [rerank {rerank_count}]'
    what = (f'the best {rerank_count} by descriptor re-ranked by template' if rerank_count
            else f'the top {args.search_top} by descriptor alone')
    print(f'{label} {what} {shortlist_ms:.0f} ms a query; in all (no verification) '
          f'{encode_ms + shortlist_ms:.0f} ms; find (of the top {args.search_top}, the best first) '
          f'{find_ms:.0f} ms (the first pass, compiling: {first_find_ms[rerank_count]:.0f} ms)',
          flush=True)
    if rerank_count == args.search_rerank:
      print(f'{label} find with all {args.search_top} verified (--verify-all) {every_ms:.0f} ms a '
            f'query; the same pairs reported: {every_same}', flush=True)
    for band in ('10-85 %', '5-10 %', 'straightened'):
      qs = [q for q in queries if truth[q][2] == band]
      hit = [q for q in qs if q in first and stem(first[q].original) == truth[q][0]]
      tl = [np.hypot(*(np.array(first[q].box[:2]) - truth[q][1][:2]))
            / first[q].original_size[0] for q in hit]
      line = []
      for what, lists in (('descriptors', by_descriptor), ('re-ranked', found)):
        r = ranks(lists, band)
        line.append(f'{what}: recall@1 {np.mean([k == 0 for k in r]):.3f}, in the top '
                    f'{args.search_top} {np.mean([k is not None for k in r]):.3f}')
      turn = ''
      if band == 'straightened' and hit:
        turn = (f'; angle error median '
                f'{np.median([abs(first[q].angle - angles[q]) for q in hit]):.3f} deg')
      print(f'{label} crops of {band:8s} ({len(qs)}): ' + '; '.join(line) +
            f'; found recall@1 {len(hit) / len(qs):.3f}; top-left error median '
            f'{np.median(tl) if tl else float("nan"):.4f}{turn}', flush=True)
    print(f'{label} reported pairs {len(matches)}, right {len(right)}: precision '
          f'{len(right) / max(len(matches), 1):.3f}; negatives (mirrored, not in the library) '
          f'reported {sum(q in first for q in negatives)} of {len(negatives)}', flush=True)
  if peers is None:
    return []
  for method, p in peers.items():
    for band in ('10-85 %', '5-10 %', 'straightened'):
      qs = [i for i, q in enumerate(queries) if truth[q][2] == band]
      right = [stem(p['nearest'][i]) == truth[queries[i]][0] for i in qs]
      print(f'search   {method:14s} crops of {band:8s} ({len(qs)}): recall@1 (nearest) '
            f'{np.mean(right):.3f}; found (nearest and reported) '
            f'{np.mean([r and p["reported"][i] for r, i in zip(right, qs)]):.3f}', flush=True)
    said = [i for i, q in enumerate(queries) if p['reported'][i]]
    good = [i for i in said if stem(p['nearest'][i]) == truth[queries[i]][0]]
    print(f'search   {method:14s} reported {len(said)} ({p["threshold"]}), right {len(good)}: '
          f'precision {len(good) / max(len(said), 1):.3f}; negatives reported '
          f'{sum(truth[queries[i]][0] is None for i in said)} of {len(negatives)}; '
          f'{p["query_ms"]:.1f} ms/query; hashes {p["build"]:.1f} photos/s; library '
          f'{p["photos"]} photos', flush=True)
  phash, crh = peers['pHash']['build'], peers['crop-resistant']['build']
  print(f'search   index build over the same {len(index)} files: cropjax {build:.1f} photos/s, '
        f'imagehash pHash (Image.open + phash) {phash:.1f} photos/s: cropjax/pHash '
        f'{build / phash:.2f}x; crop-resistant hash {crh:.1f} photos/s', flush=True)
  return [Result('search', 'index vs pHash', build, phash)]


def _search_library(root: str, photos, distractors: int) -> tuple[str, str]:
  """The search benchmarks' library under root/library (the yardstick's `photos` and
  `distractors` procedural ones, JPEG quality 90) and an empty root/queries."""
  from PIL import Image
  lib, qdir = os.path.join(root, 'library'), os.path.join(root, 'queries')
  os.makedirs(lib)
  os.makedirs(qdir)
  for name, im in photos:
    im.save(os.path.join(lib, f'{name}.jpg'), quality=90)
  for i, a in enumerate(_distractors(distractors, (1024, 768))):
    Image.fromarray(a).save(os.path.join(lib, f'distractor{i:06d}.jpg'), quality=90)
  return lib, qdir


def _user_window(size: tuple[int, int], lo: float, hi: float, rng: np.random.Generator):
  """A window (x0, y0, x1, y1) of lo-hi of a w x h frame's area, aspect 0.7-1.4."""
  w, h = size
  area, aspect = rng.uniform(lo, hi), rng.uniform(0.7, 1.4)
  cw = min(w, np.sqrt(area * w * h * aspect))
  ch = min(h, cw / aspect)
  x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
  return (x0, y0, x0 + cw, y0 + ch)


def _user_crop(im, lo: float, hi: float, rng: np.random.Generator):
  """(a crop of lo-hi of the area, aspect 0.7-1.4, resized 0.5-1x, the box it was cut from)."""
  from PIL import Image
  box = _user_window(im.size, lo, hi, rng)
  x0, y0, x1, y1 = box
  cw, ch = x1 - x0, y1 - y0
  scale = rng.uniform(0.5, 1.0)
  return im.resize((max(8, round(cw * scale)), max(8, round(ch * scale))),
                   Image.Resampling.LANCZOS, box=box), box


def _straightened_crop(im, lo: float, hi: float, rng: np.random.Generator):
  """(a straightened crop: a window of lo-hi of the area, aspect 0.7-1.4, turned by
  `yardstick.STRAIGHTENED` degrees either way and shrunk to stay in the frame, exported
  upright and resized 0.5-1x; its unturned box; its angle, Lightroom's sign)."""
  from cropjax.datasets import yardstick
  window = _user_window(im.size, lo, hi, rng)
  angle = float(rng.uniform(*yardstick.STRAIGHTENED) * rng.choice([-1.0, 1.0]))
  crop, box = yardstick.straightened_crop(im, window, angle, rng.uniform(0.5, 1.0))
  return crop, box, angle


# Photographs in the yardstick's wallpaper packages that are not yardstick photos: the real
# part of `section_rerank`'s development queries (those not installed are left out).
DEVELOPMENT_PHOTOS = (
    '/usr/share/backgrounds/Fossa_by_Jasper_Roks.jpg',
    '/usr/share/backgrounds/umang_by_Abhishek_Mudgal.jpg',
    '/usr/share/backgrounds/Painting-Colors_by__herobrine7gamer.jpg',
    '/usr/share/backgrounds/mate/abstract/Elephants.jpg',
    '/usr/share/wallpapers/Autumn/contents/images/1920x1080.jpg',
    '/usr/share/wallpapers/PastelHills/contents/images/1920x1080.jpg',
)


def section_rerank(args) -> list[Result]:
  """Development queries for choosing how many photos a query re-ranks (`search.RERANK`), never
  the yardstick's: crops of 5-10 % of the area of library photos that are not yardstick photos
  (six of each `DEVELOPMENT_PHOTOS` photo installed, added to the library, and one of each of
  100 distractors), in the search section's library. Per re-ranked count
  (`--rerank-counts`): the right photo first and in the top `--search-top`, and the time a
  query's retrieval and re-ranking take (reading and encoding it come on top)."""
  import shutil
  import tempfile

  from PIL import Image

  from cropjax import inference
  from cropjax import search
  from cropjax.datasets import yardstick
  from cropjax.search import rerank

  model = inference.load_model(args.search_model, task='pairs')
  root = tempfile.mkdtemp(prefix='cropjax-bench-rerank-')
  try:
    lib, qdir = _search_library(root, yardstick.photos(), args.search_distractors)
    extra = [p for p in DEVELOPMENT_PHOTOS if os.path.exists(p)]
    for k, path in enumerate(extra):
      im = Image.open(path).convert('RGB')
      im.thumbnail((yardstick.MAX_SIDE, yardstick.MAX_SIDE))
      im.save(os.path.join(lib, f'development{k}.jpg'), quality=90)
    rng = np.random.default_rng(123)
    sources = ([f'development{k}' for k in range(len(extra)) for _ in range(6)]
               + [f'distractor{i:06d}' for i in
                  rng.choice(args.search_distractors, min(100, args.search_distractors),
                             replace=False)])
    for j, name in enumerate(sources):
      crop, _ = _user_crop(Image.open(os.path.join(lib, f'{name}.jpg')), 0.05, 0.10, rng)
      crop.save(os.path.join(qdir, f'{j:03d}-{name}.jpg'), quality=int(rng.integers(30, 96)))
    index = search.update_index([lib], os.path.join(root, 'index'), model=model)
    queries = sorted(os.path.join(qdir, f) for f in os.listdir(qdir))
    images = [search.descriptors.read_photo(q, max(index.settings['query_sides']))[0]
              for q in queries]
    truth = [os.path.basename(q)[4:-4] for q in queries]
    described = search.descriptors.query_descriptors(images, model, index.settings)
    greys = [rerank.query_grey(im, 2 * index.settings['thumb_side']) for im in images]
    stem = lambda p: os.path.splitext(os.path.basename(p))[0]
    out = []
    for count in args.rerank_counts:
      start = time.perf_counter()
      found = search.shortlist(index, described, greys, args.search_top, count)
      ms = (time.perf_counter() - start) / len(queries) * 1e3
      names = [[stem(index.photos[k].path) for k, _ in c] for c in found]
      line = []
      for part in ('development', 'distractor'):
        sel = [i for i, t in enumerate(truth) if t.startswith(part)]
        first = np.mean([names[i][:1] == [truth[i]] for i in sel]) if sel else float('nan')
        top = np.mean([truth[i] in names[i] for i in sel]) if sel else float('nan')
        line.append(f'{part} photos ({len(sel)}): first {first:.3f}, in the top '
                    f'{args.search_top} {top:.3f}')
      print(f'rerank   {count:4d} re-ranked: {ms:5.1f} ms a query; ' + '; '.join(line),
            flush=True)
      out.append(Result('rerank', str(count), 1e3 / max(ms, 1e-6), float('nan')))
  finally:
    shutil.rmtree(root, ignore_errors=True)
  return out


# Where Debian's wallpaper packages (the yardstick's, `yardstick.INSTALL`) put their photographs.
WALLPAPER_FOLDERS = ('/usr/share/backgrounds', '/usr/share/wallpapers')


def _camera_photos(folders=WALLPAPER_FOLDERS, minimum: int = 8_000_000) -> list[str]:
  """The JPEGs under `folders` of at least `minimum` pixels, sorted by path (in the wallpaper
  packages: camera-size photographs of 8-24 MP, 0.5-16 MB)."""
  import glob

  from PIL import Image
  out = []
  for folder in folders:
    for path in glob.glob(os.path.join(folder, '**', '*.jp*g'), recursive=True):
      with Image.open(path) as im:
        if im.size[0] * im.size[1] >= minimum:
          out.append(path)
  return sorted(out)


def section_build(args) -> list[Result]:
  """An index build next to imagehash's pHash (`Image.open` + `phash`, one file after another, as
  people use it) over the same files, in alternating rounds (`--rounds`, the median reported),
  on two libraries of `--build-photos` each: camera-size photographs (the installed
  wallpaper-package photos of 8 MP or more, or those under `--build-from`, each saved again
  `--build-photos` / their number times, a few pixels cut off each time, JPEG quality 92: every
  file a photo of its own) and web-size ones (1024 x 768 procedural photos, quality 90, as the search section's
  distractors). One small build first compiles the encoder (a library of thousands
  amortises that), so the rounds time reading, encoding, pooling and saving."""
  import shutil
  import tempfile

  from PIL import Image

  from cropjax import inference
  from cropjax import search
  from cropjax import threads
  from cropjax.datasets import yardstick
  try:
    import imagehash
  except ImportError:
    print("build    skipped: imagehash is not installed (pip install -e '.[bench]')", flush=True)
    return []
  model = inference.load_model(args.search_model, task='pairs')
  sources = _camera_photos(args.build_from or WALLPAPER_FOLDERS)
  if not sources:
    print('build    skipped: no JPEGs of 8 MP or more under '
          f'{args.build_from or WALLPAPER_FOLDERS} ({yardstick.INSTALL})', flush=True)
    return []
  n = args.build_photos
  root = tempfile.mkdtemp(prefix='cropjax-bench-build-')
  out = []
  try:
    libraries = {'camera': os.path.join(root, 'camera'), 'web': os.path.join(root, 'web')}
    for folder in libraries.values():
      os.makedirs(folder)

    def camera_file(k: int) -> tuple[int, float]:
      with Image.open(sources[k % len(sources)]) as im:
        cut = 2 * (k // len(sources))
        im = im.convert('RGB').crop((0, 0, im.size[0] - cut, im.size[1] - cut))
      path = os.path.join(libraries['camera'], f'photo{k:05d}.jpg')
      im.save(path, quality=92)
      return im.size[0] * im.size[1], os.path.getsize(path) / 1e6
    pixels, megabytes = zip(*threads.map(camera_file, range(n)))
    for k, a in enumerate(_distractors(n, (1024, 768))):
      Image.fromarray(a).save(os.path.join(libraries['web'], f'photo{k:05d}.jpg'), quality=90)
    search.update_index([libraries['web']], os.path.join(root, 'warm'), model=model)
    for kind, folder in libraries.items():
      files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
      ours, phash = [], []
      for r in range(args.rounds):
        start = time.perf_counter()
        index = search.update_index([folder], os.path.join(root, f'index-{kind}-{r}'),
                                    model=model)
        ours.append(len(index) / (time.perf_counter() - start))
        start = time.perf_counter()
        hashes = [imagehash.phash(Image.open(p)) for p in files]
        phash.append(len(hashes) / (time.perf_counter() - start))
      a, b = statistics.median(ours), statistics.median(phash)
      size = (f'{statistics.median(pixels) / 1e6:.0f} MP, {statistics.median(megabytes):.1f} MB '
              f'a file (medians), from {len(sources)} photographs' if kind == 'camera'
              else '1024 x 768')
      print(f'build    {kind} library, {len(files)} files ({size}): index {a:.1f} photos/s, '
            f'imagehash pHash {b:.1f} photos/s: cropjax/pHash {a / b:.2f}x', flush=True)
      out.append(Result('build', kind, a, b))
  finally:
    shutil.rmtree(root, ignore_errors=True)
  return out


def _distractors(count: int, size: tuple[int, int], pool: int = 300) -> Iterator[np.ndarray]:
  """`count` distractor photos: the first `pool` procedural images (`cropjax.procedural`,
  0.27 s each at 1024 x 768), then new ones made from two of them at a time (a smooth random
  mask between them, a quarter turn or mirror, another exposure and colour balance): as many
  photos as a real library's, none a crop of another, for a tenth of the time each."""
  from cropjax import procedural
  base = []
  for a in procedural.images(77, min(count, pool), size):
    base.append(a)
    yield a
  import cv2
  rng = np.random.default_rng(77)
  h, w = size[1], size[0]
  for _ in range(count - len(base)):
    i, j = rng.choice(len(base), 2, replace=False)
    coarse = rng.uniform(0, 1, (4, 5)).astype(np.float32)
    mask = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    a = base[i] * np.clip(mask, 0, 1) + base[j] * (1 - np.clip(mask, 0, 1))
    a = np.clip(255 * (a / 255) ** rng.uniform(0.7, 1.4) * rng.uniform(0.85, 1.15, 3), 0, 255)
    a = a.astype(np.uint8)
    if rng.uniform() < 0.5:
      a = a[:, ::-1]
    if rng.uniform() < 0.5:
      a = a[::-1, ::-1]
    yield np.ascontiguousarray(a)


PHASH_CUTOFF = 10  # bits of 64: the Hamming distance pHash users commonly call 'the same photo'


def _imagehash_peers(library: list[str], queries: list[str],
                     smaller: list[str] | None = None) -> dict[str, dict] | None:
  """imagehash's pHash and crop-resistant hash over the same library files and queries, used
  as people use them: hashes of `Image.open(path)`; pHash's nearest by Hamming distance,
  reported at <= PHASH_CUTOFF bits; the crop-resistant hash's `best_match` (the least
  `ImageMultiHash.__sub__`), reported when it `matches` (at least one segment within 25 % of
  the bits, imagehash's defaults), computed with numpy over all photos at once and checked
  against `best_match` itself on the first queries. Per method: 'nearest' (library paths) and
  'reported' per query, 'build' (library photos/s), 'query_ms', 'threshold', 'photos'. The
  crop-resistant hash (about 4 photos/s) is given the `smaller` library instead where one is
  given (an easier task for it). None without imagehash."""
  try:
    import imagehash
  except ImportError:
    print('search   imagehash peers skipped: imagehash is not installed '
          "(pip install -e '.[bench]')", flush=True)
    return None
  from PIL import Image

  as_int = lambda h: int(str(h), 16)  # a 64-bit hash's bits as one integer
  out = {}
  start = time.perf_counter()
  hashes = [imagehash.phash(Image.open(p)) for p in library]
  build = len(library) / (time.perf_counter() - start)
  table = np.array([as_int(h) for h in hashes], np.uint64)
  start = time.perf_counter()
  nearest, reported = [], []
  for q in queries:
    d = np.bitwise_count(table ^ np.uint64(as_int(imagehash.phash(Image.open(q)))))
    k = int(np.argmin(d))
    nearest.append(k)
    reported.append(bool(d[k] <= PHASH_CUTOFF))
  out['pHash'] = {'nearest': [library[k] for k in nearest], 'reported': reported, 'build': build,
                  'photos': len(library),
                  'query_ms': (time.perf_counter() - start) / len(queries) * 1e3,
                  'threshold': f'Hamming <= {PHASH_CUTOFF} of 64'}

  start = time.perf_counter()
  library = smaller or library
  multi = [imagehash.crop_resistant_hash(Image.open(p)) for p in library]
  build = len(library) / (time.perf_counter() - start)
  segments = np.array([as_int(s) for m in multi for s in m.segment_hashes], np.uint64)
  firsts = np.cumsum([0] + [len(m.segment_hashes) for m in multi[:-1]])
  start = time.perf_counter()
  nearest, reported, checks = [], [], []
  for i, q in enumerate(queries):
    h = imagehash.crop_resistant_hash(Image.open(q))
    own = np.array([as_int(s) for s in h.segment_hashes], np.uint64)
    bits = len(h.segment_hashes[0])
    lowest = np.minimum.reduceat(np.bitwise_count(own[:, None] ^ segments[None]), firsts, axis=1)
    within = lowest <= bits * 0.25                             # hash_diff's default cutoff
    matches = within.sum(0)
    total = np.where(within, lowest, 0).sum(0)
    score = np.where(matches > 0, len(own) - (matches - total / np.maximum(matches * bits, 1)),
                     len(own))                                  # ImageMultiHash.__sub__
    k = int(np.argmin(score))
    checks += [(h, k, i)] if i < 3 else []
    nearest.append(k)
    reported.append(bool(matches[k] >= 1))
  out['crop-resistant'] = {'nearest': [library[k] for k in nearest], 'reported': reported,
                           'build': build, 'photos': len(library),
                           'query_ms': (time.perf_counter() - start) / len(queries) * 1e3,
                           'threshold': '>= 1 segment within 25 % of the bits'}
  for h, k, i in checks:  # imagehash's own, slow, matching: the same photo, the same verdict
    if h.best_match(multi) is not multi[k] or h.matches(multi[k]) != reported[i]:
      raise AssertionError('bench: the vectorised crop-resistant match disagrees with '
                           'ImageMultiHash.best_match / matches')
  return out


def section_neighbours(args) -> list[Result]:
  """Retrieval latency of cropjax.search's candidates on synthetic photo-like descriptors
  (88 regions of 64 dims a photo, scattered around the photo's own direction; queries are
  regions disturbed to a cosine of about 0.8 at 3 scales), at each of `--neighbours-sizes`
  regions: exact with the region vectors made on each call (numpy) and held (flat), and
  faiss's HNSW graph (where faiss is installed), each for the `--search-top` best photos,
  and for comparison faiss's exact flat index asked for as many regions as makes it exact.
  Per query, all queries in one call as cropjax-find makes it, and one at a time; what is
  held, its build time and bytes a region; the top photos as numpy's."""
  from pathlib import Path

  from cropjax import search
  from cropjax.search.find import _nearest_photos  # faiss asked for regions, for comparison
  from cropjax.search import index as index_lib
  from cropjax.search import neighbours

  unit = lambda a: (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)
  kinds = ['numpy', 'flat'] + (['hnsw', 'faiss-flat'] if neighbours.available() else [])
  if len(kinds) == 2:
    print("neighbours faiss is not installed (pip install -e '.[faiss]'): no graph", flush=True)
  for size in args.neighbours_sizes:
    rng = np.random.default_rng(0)
    photos, regions, dim = max(1, size // 88), 88, 64
    d = unit(rng.standard_normal((photos, 1, dim)) + 0.7 * rng.standard_normal(
        (photos, regions, dim)))
    entries = [index_lib.Photo(f'p{k}', 1, 1, '', 1, 1, (k * regions, (k + 1) * regions))
               for k in range(photos)]
    owner = np.repeat(np.arange(photos), regions).astype(np.float32)[:, None]
    index = index_lib.Index(Path('.'), '', {}, entries, d.reshape(-1, dim).astype(np.float16),
                            np.concatenate([owner, np.zeros((len(owner), 4), np.float32)], 1),
                            d[:, :3].astype(np.float16), np.zeros((photos, 8, 8), np.uint8))
    picked = index.descriptors[rng.choice(len(index.descriptors), (100, 3))].astype(np.float32)
    queries = unit(picked + 0.75 * unit(rng.standard_normal(picked.shape)))
    index.whitening, index.hubness  # learned once (an index saves its hubness), before timing
    found = {}
    for kind in kinds:
      extra, run = '', lambda q: search.candidates(index, q, args.search_top, search=kind)
      if kind != 'numpy':
        start = time.perf_counter()
        held = index.search_matrix if kind == 'flat' else index.neighbours(kind[-4:])
        built = time.perf_counter() - start
        extra = f'; built in {built:.2f} s, {held.nbytes / len(held):.0f} bytes a region'
      if kind == 'faiss-flat':  # regions enough for the top photos exactly, each its best
        run = lambda q: _nearest_photos(index, q, args.search_top, None, 'flat')
      batch = _timed(lambda: found.__setitem__(kind, run(queries)), args.seconds, min_calls=1)
      one = _timed(lambda: [run(q[None]) for q in queries[:20]], args.seconds,
                   min_calls=1) / 20
      recall = np.mean([len({k for k, _ in a} & {k for k, _ in b}) / len(a)
                        for a, b in zip(found['numpy'], found[kind])])
      print(f'neighbours {len(index.descriptors):>9,} regions ({photos:,} photos) {kind:10s}: '
            f'{batch / len(queries) * 1e3:7.2f} ms a query in a batch of {len(queries)}, '
            f'{one * 1e3:7.2f} ms one at a time; top {args.search_top} as numpy\'s '
            f'{recall:.3f}{extra}', flush=True)
  return []


SECTIONS: dict[str, Callable[[Any], list[Result]]] = {
    'matmul': section_matmul,
    'train': section_train,
    'forward': section_forward,
    'convs': section_convs,
    'pipeline': section_pipeline,
    'loop': section_loop,
    'predict': section_predict,
    'search': section_search,
    'rerank': section_rerank,
    'build': section_build,
    'neighbours': section_neighbours,
}
DEFAULT_SECTIONS = ['matmul', 'train', 'forward', 'pipeline']

# ---------------------------------------------------------------------------- output

_PEAK: list[float] = []
_RESULTS: list[Result] = []  # earlier sections' results, for later ones


def _print_row(r: Result, args) -> None:
  peak = max(_PEAK) if _PEAK else float('nan')
  frac = lambda rate: rate * r.flops_per_example / 1e9 / peak
  print(f'{r.section:8s} {r.config:14s} cropjax {r.jax_rate:8.1f} ex/s  torch {r.torch_rate:8.1f} ex/s  '
        f'ratio {r.ratio:5.2f}  {r.flops_per_example / 1e9:6.2f} GFLOP/ex  '
        f'peak frac {frac(r.jax_rate):4.0%} vs {frac(r.torch_rate):4.0%}  '
        f'mem {r.jax_mem / 2**20:7.0f} MiB vs {r.torch_mem / 2**20:7.0f} MiB', flush=True)


def _torch_device(choice: str) -> str:
  """'cpu' or 'cuda' for --torch-device; on a GPU, torch gets the TF32 JAX uses by default."""
  if choice == 'auto':
    choice = 'cuda' if jax.default_backend() == 'gpu' and torch.cuda.is_available() else 'cpu'
  if choice == 'cuda':
    if not torch.cuda.is_available():
      raise SystemExit('bench.py: --torch-device cuda, but torch sees no GPU')
    # XLA runs float32 convolutions and matrix products in TF32 on a GPU by default
    # (jax_default_matmul_precision unset); torch does so for convolutions only.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # as XLA autotunes its convolutions
  return choice


def _torch_where() -> str:
  if TORCH_DEVICE[0] == 'cpu':
    return f'the CPU ({torch.get_num_threads()} threads)'
  return f'{torch.cuda.get_device_name()} (TF32, cuDNN autotuned)'


def _ints(value: str) -> list[int]:
  """A comma-separated list of integers, as the list options take them."""
  return [int(x) for x in value.split(',')]


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sections', default=','.join(DEFAULT_SECTIONS),
                      help=f'comma-separated, from {list(SECTIONS)}')
  parser.add_argument('--configs', default=','.join(CONFIGS), help=f'from {list(CONFIGS)}')
  parser.add_argument('--batch', type=int, default=0, help='override every batch size')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'],
                      help="cropjax's compute dtype (torch stays float32)")
  parser.add_argument('--seconds', type=float, default=3.0, help='per timing round')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--loop-steps', type=int, default=1000,
                      help='steps of the loop section (the demo evaluates and saves every 500)')
  parser.add_argument('--predict-pairs', type=int, default=64, help='pairs of the predict section')
  parser.add_argument('--predict-rounds', type=int, default=3,
                      help='predict: timing rounds of each way and SIFT (medians reported)')
  parser.add_argument('--predict-files', type=int, default=10,
                      help='predict: pairs of camera files (yardstick photos and crops)')
  parser.add_argument('--search-model', default='workdirs/demo',
                      help='search: a trained siamese model (default workdirs/demo)')
  parser.add_argument('--search-distractors', type=int, default=1000,
                      help='search: procedural distractor photos in the library (default 1000)')
  parser.add_argument('--search-top', type=int, default=5, help='search: candidates verified')
  parser.add_argument('--search-rerank', type=int,
                      help="search: candidates re-ranked by template matching (0: none; "
                      "default: cropjax-find's)")
  parser.add_argument('--search-also-rerank', type=_ints,
                      default=[], help='search: more re-ranked counts measured in the same run, '
                      'e.g. 300 or 0,300')
  parser.add_argument('--rerank-counts', type=_ints,
                      default=[0, 100, 200, 300, 400],
                      help='rerank: re-ranked counts measured (default 0,100,200,300,400)')
  parser.add_argument('--search-photo-dir', action='append', metavar='DIR',
                      help="search: the library's photos (and the queries' originals) from DIR "
                           "instead of the yardstick's: 40 spread over its files, as "
                           "scripts/eval.py --photo-dir takes them; may be repeated")
  parser.add_argument('--search-crop-resistant-photos', type=int, default=0,
                      help='search: give imagehash\'s crop-resistant hash (about 4 photos/s) only '
                           'the yardstick photos and this many distractors (default 0: all)')
  parser.add_argument('--build-photos', type=int, default=120,
                      help='build: files in each of its two libraries (default 120)')
  parser.add_argument('--build-from', action='append',
                      help="build: a folder of photographs (JPEGs of 8 MP or more are used) "
                           "instead of the wallpaper packages'; may be repeated")
  parser.add_argument('--neighbours-sizes', default='10000,100000', type=_ints,
                      help='neighbours: synthetic region counts (default 10000,100000)')
  parser.add_argument('--torch-device', default='auto', choices=['auto', 'cpu', 'cuda'],
                      help="where torch runs (auto: cuda when JAX's default backend is a GPU "
                           "and torch sees one, else cpu)")
  parser.add_argument('--json', help='also write the results here')
  args = parser.parse_args(argv)
  args.sections = args.sections.split(',')
  args.configs = args.configs.split(',')
  for s in args.sections:
    if s not in SECTIONS:
      parser.error(f'unknown section {s!r}; choose from {list(SECTIONS)}')
  for c in args.configs:
    if c not in CONFIGS:
      parser.error(f'unknown config {c!r}; choose from {list(CONFIGS)}')

  TORCH_DEVICE[0] = _torch_device(args.torch_device)
  print(f'jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}, '
        f'torch {torch.__version__} on {_torch_where()}, '
        f'{os.cpu_count()} CPUs, cropjax dtype {args.dtype}')
  print(f'oneDNN convolutions: {"on" if onednn.available() else "off"}; XLA host buffers '
        f'cached: {host_buffers.install() or "yes"}')
  results: list[Result] = []
  if any(s in args.sections for s in ('train', 'forward')) and 'matmul' not in args.sections:
    args.sections.insert(0, 'matmul')  # the yardstick for the peak fractions
  for name in args.sections:
    rs = SECTIONS[name](args)
    if name == 'matmul':
      r = rs[0]
      _PEAK.append(max(r.jax_rate, r.torch_rate))
      print(f'matmul   {r.config}: jax {r.jax_rate:.0f} GFLOP/s, torch {r.torch_rate:.0f} GFLOP/s '
            f'(peak used for fractions: {_PEAK[0]:.0f})', flush=True)
    results += rs
    _RESULTS.extend(rs)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
  cache = host_buffers.stats()
  if cache.hits + cache.misses:
    print(f'host buffer cache: {cache.hits} of {cache.hits + cache.misses} large XLA buffers '
          f'reused; {cache.blocks} blocks ({cache.bytes / 2**20:.0f} MiB) held at the end')
  model_rows = [r for r in results if r.section in ('train', 'forward')]
  if model_rows:
    worst = min(model_rows, key=lambda r: r.ratio)
    wins = sum(r.ratio >= 1 for r in model_rows)
    print(f'SUMMARY: cropjax/torch examples/s ratio {min(r.ratio for r in model_rows):.2f} to '
          f'{max(r.ratio for r in model_rows):.2f}; at least as fast in {wins}/{len(model_rows)} '
          f'(worst: {worst.section} {worst.config}); process peak RSS {rss:.0f} MiB')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump([dataclasses.asdict(r) | {'ratio': r.ratio} for r in results], f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
