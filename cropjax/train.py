"""Training cropjax's models: freeze-then-unfreeze, data parallel, checkpointed.

    python scripts/train.py --config configs/demo.py --workdir workdirs/demo
    python scripts/train.py --config configs/autocrop_demo.py --workdir workdirs/autocrop

`config.task` picks the problem (`cropjax.tasks`: 'pairs' or 'autocrop').

`train_and_evaluate(config, workdir)` runs the whole job. The train step is one
pure function `(state, batch) -> (state, metrics)`, jitted once per phase with
the state donated, over a `jax.sharding` mesh: the batch split along 'data',
the state replicated.

Phase 1 (`config.freeze_steps` steps) trains only the heads: the backbone's
updates are `optax.set_to_zero` through `optax.partition`, its BatchNorm runs
in inference mode, so its parameters and statistics stay bit-identical. Phase 2
trains everything, the backbone at `config.backbone_lr_mult` times the rate.
Parameter groups are declared in the config as path patterns, and every
parameter must fall in exactly one group.

AdamW's warmup-cosine schedule keeps its span in the optimizer state
(`ScheduleState`), so `config.train_minutes` can fit a run to a machine: after
warmup the run times its steps and an evaluation and, where `config.num_steps`
would not fit in the time left, spans the steps that do (`steps_in_budget`),
without compiling the step again; a resumed run keeps its span.
"""

from __future__ import annotations

import logging as std_logging  # absl's level constants are its own
import os
import re
import time
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from cropjax import models
from cropjax import tasks
from cropjax import weights

GROUPS = ('head', 'backbone')


class ConfigError(ValueError):
  """The configuration cannot run; the message says what to change."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


# ------------------------------------------------------------------ model, params


def get_task(config: ml_collections.ConfigDict) -> tasks.Task:
  try:
    return tasks.get(config.task)
  except ValueError as e:
    raise ConfigError(f'config.task: {e}') from None


def build_model(config: ml_collections.ConfigDict):
  """The task's model (`cropjax.heads.PairModel` or `CropModel`) on the configured backbone."""
  task = get_task(config)
  dtypes = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
  if config.model.dtype not in dtypes:
    raise ConfigError(f'config.model.dtype: {config.model.dtype!r}, use one of {sorted(dtypes)}')
  try:
    options = task.backbone(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  try:
    backbone = models.get(config.model.arch, num_classes=None, dtype=dtypes[config.model.dtype],
                          **options)
  except ValueError as e:
    raise ConfigError(f'config.model.arch: {e}') from None
  return task.make_model(backbone, config)


def param_labels(params: Any, groups: dict[str, str]) -> Any:
  """'head' or 'backbone' for each parameter, from the config's path patterns.

  Every parameter must match exactly one group's pattern, and every pattern
  must match something; otherwise a ConfigError lists the offenders.
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')
  unknown = set(groups) - set(GROUPS)
  if unknown:
    raise ConfigError(f'config.param_groups: unknown groups {sorted(unknown)}, use {GROUPS}')
  labels, unmatched, ambiguous = {}, [], []
  hits = {g: 0 for g in groups}
  for path in flat:
    matched = [g for g, pattern in groups.items() if re.fullmatch(pattern, path)]
    for g in matched:
      hits[g] += 1
    if not matched:
      unmatched.append(path)
    elif len(matched) > 1:
      ambiguous.append(f'{path} ({", ".join(matched)})')
    else:
      labels[path] = matched[0]
  empty = [f'{g}: {groups[g]!r}' for g, n in hits.items() if n == 0]
  if unmatched or ambiguous or empty:
    parts = []
    if unmatched:
      parts.append(f'parameters in no group: {unmatched[:8]}')
    if ambiguous:
      parts.append(f'parameters in several groups: {ambiguous[:8]}')
    if empty:
      parts.append(f'patterns that match nothing: {empty}')
    raise ConfigError('config.param_groups: ' + '; '.join(parts))
  return flax.traverse_util.unflatten_dict(labels, sep='/')


class ScheduleState(NamedTuple):
  """`scale_by_schedule`'s state: the updates taken, and the steps its schedule spans. The
  span is data, not a constant of the compiled step, so a time budget can shorten the run
  once it has measured the machine (`with_total`), and a resumed run keeps the span it had."""
  count: jax.Array
  total: jax.Array


def warmup_cosine(count, total, peak: float, warmup: int) -> jax.Array:
  """`optax.warmup_cosine_decay_schedule(0, peak, warmup, total)` at `count`, with `total` a
  traced value: linear from 0 over `warmup` steps, then a cosine to 0 at `total`."""
  count = jnp.asarray(count, jnp.float32)
  span = jnp.maximum(jnp.asarray(total, jnp.float32) - warmup, 1.0)
  cosine = peak * 0.5 * (1 + jnp.cos(jnp.pi * jnp.clip(count - warmup, 0.0, span) / span))
  return jnp.where(count < warmup, peak * count / max(warmup, 1), cosine)


def scale_by_schedule(peak: float, warmup: int, total: int) -> optax.GradientTransformation:
  """Updates scaled by minus `warmup_cosine` at the update's count (as optax's
  `scale_by_learning_rate` with that schedule), its span held in the state."""
  def init(params):
    del params
    return ScheduleState(jnp.zeros([], jnp.int32), jnp.asarray(total, jnp.int32))

  def update(updates, state, params=None):
    del params
    rate = warmup_cosine(state.count, state.total, peak, warmup)
    updates = jax.tree_util.tree_map(lambda u: (-rate * u).astype(u.dtype), updates)
    return updates, ScheduleState(optax.safe_increment(state.count), state.total)
  return optax.GradientTransformation(init, update)


def _is_schedule(x) -> bool:
  return isinstance(x, ScheduleState)


def with_total(opt_state: Any, total: int) -> Any:
  """The optimizer state with every schedule in it spanning `total` steps."""
  return jax.tree_util.tree_map(
      lambda s: s._replace(total=jnp.asarray(total, jnp.int32)) if _is_schedule(s) else s,
      opt_state, is_leaf=_is_schedule)


def schedule_total(opt_state: Any) -> int | None:
  """The steps the optimizer state's schedules span (None where it has none)."""
  found = [s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=_is_schedule)
           if _is_schedule(s)]
  return int(jax.device_get(found[0].total)) if found else None


def make_optimizer(config, labels, phase: int) -> optax.GradientTransformation:
  """AdamW (clipped) under a warmup-cosine schedule spanning `config.num_steps` (until a time
  budget shortens it: `with_total`); in phase 1 the backbone's updates are zero."""
  # Warmup as long as the run: all warmup (the cosine needs one step at least;
  # train_and_evaluate refuses num_steps < 1).
  warmup = min(config.warmup_steps, config.num_steps - 1)

  def opt(mult):
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.scale_by_adam(),
                       optax.add_decayed_weights(config.weight_decay),
                       scale_by_schedule(config.learning_rate * mult, warmup, config.num_steps))

  backbone = optax.set_to_zero() if phase == 1 else opt(config.backbone_lr_mult)
  return optax.partition({'head': opt(1.0), 'backbone': backbone}, labels)


def init_input(config) -> jax.Array:
  """The dummy batch a model of `config` is initialised on."""
  channels = get_task(config).in_channels
  return jnp.zeros((1, config.image_size, config.image_size, channels), jnp.float32)


def initial_variables(config, model, rng) -> dict[str, Any]:
  variables = models.init_variables(model, rng, init_input(config), train=False)
  variables = models.variables_of(variables)
  path = config.init.checkpoint
  if not path:
    return variables
  if not os.path.isdir(path):
    raise ConfigError(f'config.init.checkpoint: {path}: no such directory '
                      '(convert a torchvision checkpoint with scripts/convert_weights.py)')
  loaded, meta = weights.load(path, with_meta=True)
  if meta.get('arch') != config.model.arch:
    raise ConfigError(f'config.init.checkpoint: {path} holds {meta.get("arch")}, '
                      f'the config trains {config.model.arch}')
  backbone = model.backbone
  if meta.get('in_channels') == 3 and backbone.in_channels == 6:
    loaded = weights.expand_stem(loaded, 6)
  # An encoder that stops early (ResNet.outputs) has no use for the later stages.
  unused = tuple(f'layer{k}_' for k in range(backbone.stages_built + 1,
                                             len(backbone.stage_sizes) + 1))
  return merge_backbone(variables, loaded, source=path, unused=unused)


def merge_backbone(variables, backbone_vars, *, source: str,
                   unused: tuple[str, ...] = ()) -> dict[str, Any]:
  """Puts converted ResNet weights into the pair model's backbone, strictly.

  Missing or unexpected backbone tensors, or shape mismatches, are listed in
  the error; a torchvision classifier ('fc') is dropped (the heads replace it),
  and so are tensors under the `unused` prefixes (stages a truncated encoder
  does not build).
  """
  out = flax.core.unfreeze(jax.tree_util.tree_map(np.asarray, variables))
  problems = []
  for col in models.VARIABLES:
    target = flax.traverse_util.flatten_dict(out[col]['backbone'], sep='/')
    given = {k: v for k, v in flax.traverse_util.flatten_dict(
        flax.core.unfreeze(backbone_vars[col]), sep='/').items()
             if not k.startswith(('fc/', *unused))}
    missing = sorted(set(target) - set(given))
    unexpected = sorted(set(given) - set(target))
    shapes = [f'{k} {np.shape(given[k])} vs {target[k].shape}' for k in sorted(set(target) & set(given))
              if np.shape(given[k]) != target[k].shape]
    for title, items in (('missing', missing), ('unexpected', unexpected), ('shape', shapes)):
      if items:
        problems.append(f'{col} {title}: {items[:8]}' + (f' (+{len(items) - 8})' if len(items) > 8 else ''))
    target.update({k: np.asarray(v, np.float32) for k, v in given.items() if k in target})
    out[col]['backbone'] = flax.traverse_util.unflatten_dict(target, sep='/')
  if problems:
    raise ConfigError(f'{source} does not fit the backbone: ' + '; '.join(problems))
  return out


# ------------------------------------------------------------------ the step


def _extents(batch) -> dict[str, Any]:
  """The model's `extents` argument where the batch's sides are kept at their aspect ratio."""
  return {'extents': batch['extent']} if 'extent' in batch else {}


def make_train_step(config, model, tx, phase: int) -> Callable:
  """The pure step for one phase: (state, batch) -> (state, metrics)."""
  task = get_task(config)
  loss_weights = dict(config.loss_weights)

  def step(state: TrainState, batch):
    images = batch['image'].astype(jnp.float32)
    images = models.normalize(images)
    extra = _extents(batch)

    def loss_fn(params):
      if phase == 1:  # frozen backbone: inference-mode BatchNorm, no gradient
        out = model.apply({'params': params, 'batch_stats': state.batch_stats}, images,
                          train=False, backbone_train=False, **extra)
        new_stats = state.batch_stats
      else:
        out, upd = model.apply({'params': params, 'batch_stats': state.batch_stats}, images,
                               train=True, mutable=['batch_stats'], **extra)
        new_stats = upd['batch_stats']
      loss, terms = task.loss(out, batch, loss_weights, config)
      return loss, (terms, out, new_stats)

    (loss, (terms, out, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {'loss': loss, **{f'loss_{k}': v for k, v in terms.items()},
               **task.metrics(out, batch)}
    return TrainState(state.step + 1, params, new_stats, opt_state), metrics

  return step


def make_eval_step(config, model) -> Callable:
  """(variables, batch) -> (metrics, outputs), inference mode; variables: params, batch_stats."""
  task = get_task(config)

  def step(variables, batch):
    out = model.apply(variables, models.normalize(batch['image'].astype(jnp.float32)),
                      train=False, **_extents(batch))
    loss, _ = task.loss(out, batch, dict(config.loss_weights), config)
    return {'loss': loss, **task.metrics(out, batch)}, out
  return step


# ------------------------------------------------------------------ the loop


def _mesh_and_shardings(config):
  # Auto axes: XLA's partitioner places the collectives (BatchNorm statistics and
  # gradients over the sharded batch); under jit the sums are global, no pmean.
  mesh = jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  if config.batch_size % jax.device_count():
    raise ConfigError(f'config.batch_size {config.batch_size} is not divisible by the '
                      f'{jax.device_count()} devices')
  return mesh, NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """`jax.distributed.initialize`, with gloo for collectives between CPU processes."""
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # only affects CPU devices
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  logging.info('process %d of %d, %d local / %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _global_batch(batch, data_sharding):
  """This process's numpy batch -> a global jax.Array split along 'data'."""
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(data_sharding, np.asarray(x)), batch)


# A time budget's run measures the machine over its first steps, to this step at least (or to
# the end of warmup, whichever is later: the rate until then does not depend on the span).
CALIBRATION_STEPS = 20
# Of a time budget, what is left unplanned: the rate drifts, and checkpoints take time too.
BUDGET_MARGIN = 0.03


def steps_in_budget(*, budget_s: float, elapsed_s: float, done: int, step_s: float,
                    eval_s: float, eval_every: int, num_steps: int) -> int:
  """The steps a run with a time budget takes in all: as many as fit in what is left of
  `budget_s` after `elapsed_s` (less `BUDGET_MARGIN`), at `step_s` a step, an evaluation of
  `eval_s` every `eval_every` steps and one at the end; at most `num_steps`, at least `done`."""
  left = budget_s * (1 - BUDGET_MARGIN) - elapsed_s - eval_s
  more = int(max(0.0, left) // max(step_s + eval_s / max(eval_every, 1), 1e-9))
  return max(done, min(num_steps, done + more))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_at: int | None = None,
                       clock: Callable[[], float] = time.perf_counter) -> TrainState:
  """Trains (or resumes) in `workdir`; returns the final state.

  `stop_at` ends this run early at that step, with a checkpoint, as a
  preemption would (the schedule still spans the whole run). With
  `config.train_minutes` the run is fitted to that wall-clock time (from this
  call, the data's preparation and compiling included; the verdict comes after):
  at the end of warmup (`CALIBRATION_STEPS` at least) it times its steps and an
  evaluation on `clock`, and where `config.num_steps` would not fit, the schedule
  is made to span the steps that do (`steps_in_budget`); a resumed run keeps the
  span it was given.
  """
  started = clock()
  from clu import metric_writers
  from clu import periodic_actions

  from cropjax import checkpoint

  _quiet_orbax()
  if config.num_steps < 1:
    raise ConfigError(f'config.num_steps must be at least 1, got {config.num_steps}')
  if config.freeze_steps > config.num_steps:
    raise ConfigError(f'config.freeze_steps {config.freeze_steps} > num_steps {config.num_steps}')
  task = get_task(config)
  mesh, replicated, data_sharding = _mesh_and_shardings(config)
  model = build_model(config)
  variables = initial_variables(config, model, jax.random.key(config.seed))
  labels = param_labels(variables['params'], dict(config.param_groups))
  txs = {1: make_optimizer(config, labels, 1), 2: make_optimizer(config, labels, 2)}
  phase_of = lambda step: 1 if step < config.freeze_steps else 2
  state = TrainState(jnp.zeros((), jnp.int32), variables['params'], variables['batch_stats'],
                     txs[phase_of(0)].init(variables['params']))

  manager = checkpoint.manager(os.path.join(workdir, 'checkpoints'), config.keep_checkpoints,
                               best_metric=task.best_metric)
  # A state saved after step k carries the optimizer of the phase of step k - 1.
  restored = checkpoint.restore_latest(
      manager, lambda k: _state_for_phase(state, txs, phase_of(max(k - 1, 0))))
  if restored is not None:
    state = restored
    logging.info('resumed from step %d in %s', int(state.step), workdir)
  start = int(state.step)
  budget_s = 60.0 * config.get('train_minutes', 0.0)
  # Where a budget's run measures the machine (None: it does not, or it did before a resume).
  calibrate_at = max(CALIBRATION_STEPS, min(config.warmup_steps, config.num_steps - 1))
  held = schedule_total(state.opt_state)  # a fresh state's: num_steps; a restored one's
  total = config.num_steps  # the steps the schedule spans
  if budget_s and start >= calibrate_at:  # resumed: the span that budget gave
    total = min(held or total, total)
  if not budget_s or start >= calibrate_at or calibrate_at >= config.num_steps:
    calibrate_at = None
  if held != total:  # resumed with another config.num_steps, or without the budget
    state = state.replace(opt_state=with_total(state.opt_state, total))
  state = jax.device_put(state, replicated)

  if jax.process_index() == 0:  # what cropjax.load_model rebuilds the model from
    _write_config(config, workdir)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if start == 0:
    writer.write_hparams({k: v for k, v in _flat_config(config).items()})
  progress = lambda steps: periodic_actions.ReportProgress(
      num_train_steps=steps, writer=writer, every_steps=config.log_every)
  ending = lambda steps: steps if stop_at is None else min(stop_at, steps)
  report = progress(total)
  train_ds, val_ds = task.datasets(config, start)
  train_iter = train_ds.as_numpy_iterator()
  steps = {}
  # Replicated outputs: every process can read the metrics and the drawn predictions.
  eval_step = _compiled_for(
      jax.jit(make_eval_step(config, model), in_shardings=(replicated, data_sharding),
              out_shardings=(replicated, replicated)), _variables(state), val_ds, data_sharding)
  last_metrics = {}
  end = ending(total)
  tick, tick_step = time.perf_counter(), start
  timed = None  # (clock, step) once this run's first step is done: the budget's rate from there
  step = start
  while step < end:
    phase = phase_of(step)
    if step == config.freeze_steps and step > 0:
      state = _unfreeze(state, txs, total)
      state = jax.device_put(state, replicated)
    if phase not in steps:
      steps[phase] = jax.jit(make_train_step(config, model, txs[phase], phase),
                             in_shardings=(replicated, data_sharding),
                             out_shardings=(replicated, replicated), donate_argnums=0)
    batch = _global_batch(next(train_iter), data_sharding)
    state, metrics = steps[phase](state, batch)
    if calibrate_at is not None and (timed is None or step + 1 == calibrate_at):
      jax.block_until_ready(state)
      if timed is None:
        timed = (clock(), step + 1)
      if step + 1 == calibrate_at:
        # The steps after this run's first (which compiled); with none, all since the start.
        step_s = ((clock() - timed[0]) / (step + 1 - timed[1]) if step + 1 > timed[1]
                  else clock() - started)
        eval_from = clock()
        last_metrics = evaluate(eval_step, state, val_ds, data_sharding, writer, step + 1, task)
        eval_s = clock() - eval_from
        total = _agreed(steps_in_budget(
            budget_s=budget_s, elapsed_s=clock() - started, done=step + 1, step_s=step_s,
            eval_s=eval_s, eval_every=config.eval_every, num_steps=config.num_steps))
        state = jax.device_put(state.replace(opt_state=with_total(state.opt_state, total)),
                               replicated)
        end, report = ending(total), progress(total)
        logging.info('time budget %.1f min: %d of %d steps fit (%.3f s a step, %.1f s an '
                     'evaluation, %.0f s gone)', budget_s / 60, total, config.num_steps,
                     step_s, eval_s, clock() - started)
    report(step + 1)
    last = step + 1 == end
    log_now = (step + 1) % config.log_every == 0 or last
    save_now = (step + 1) % config.checkpoint_every == 0 or last
    if log_now or save_now:  # never log or save past a non-finite loss
      metrics = jax.device_get(metrics)
      if not np.isfinite(metrics['loss']):
        manager.wait_until_finished()
        raise FloatingPointError(
            f'loss is {metrics["loss"]} at step {step + 1}; stopped. The last good checkpoint '
            f'(step {manager.latest_step()}) in {workdir} is left as it was')
    if log_now:
      now = time.perf_counter()
      rate = config.batch_size * (step + 1 - tick_step) / max(now - tick, 1e-9)
      tick, tick_step = now, step + 1
      writer.write_scalars(step + 1, {f'train_{k}': float(v) for k, v in metrics.items()}
                           | {'phase': phase, 'examples_per_second': rate})
    if ((step + 1) % config.eval_every == 0 or last) and step + 1 != calibrate_at:
      last_metrics = evaluate(eval_step, state, val_ds, data_sharding, writer, step + 1, task)
    if save_now:
      checkpoint.save(manager, step + 1, state, last_metrics)
    step += 1
  manager.wait_until_finished()
  writer.flush()
  if config.task == 'pairs' and config.get('verdict_photos', 0) and end == total:
    _fit_verdict(config, state, workdir)
  return state


def _fit_verdict(config: ml_collections.ConfigDict, state: TrainState, workdir: str) -> None:
  """Fits the crop-pair verdict on validation photos and saves it beside the checkpoints."""
  from cropjax import inference
  from cropjax.matching import verdict
  if jax.process_index() != 0:
    return
  start = time.perf_counter()
  model = inference.Model(config, jax.device_get(_variables(state)), workdir, int(state.step))
  fitted = verdict.fit_for_model(model, max_photos=config.verdict_photos, seed=config.seed)
  fitted.save(os.path.join(workdir, verdict.FILE))
  logging.info('verdict fitted on %s in %.0f s: %s', fitted.fitted_on,
               time.perf_counter() - start, os.path.join(workdir, verdict.FILE))


def _variables(state: TrainState) -> dict[str, Any]:
  return {'params': state.params, 'batch_stats': state.batch_stats}


def _compiled_for(step, variables, ds, data_sharding):
  """`step` compiled now for the batches of `ds`, when their shapes are static.

  A problem in it then shows at the start, not at the first evaluation, and the
  compilation is not paid in the middle of the run. Otherwise `step` as it is.
  """
  spec = ds.element_spec
  if any(None in s.shape for s in jax.tree_util.tree_leaves(spec)):
    return step
  procs = jax.process_count()
  batch = jax.tree_util.tree_map(
      lambda s: jax.ShapeDtypeStruct((s.shape[0] * procs, *s.shape[1:]), s.dtype.as_numpy_dtype,
                                     sharding=data_sharding), spec)
  return step.lower(variables, batch).compile()


def _write_config(config, workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, 'config.json')
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(config.to_json(indent=2))
  os.replace(tmp, path)


def _quiet_orbax() -> None:
  """orbax logs every save at INFO through absl; keep its warnings only."""
  # ABSLHandler.handle skips its own filters and hands records to its python_handler.
  handler = logging.get_absl_handler().python_handler
  if not any(getattr(f, 'cropjax', False) for f in handler.filters):
    class _Filter:
      cropjax = True

      def filter(self, record):
        return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname

    handler.addFilter(_Filter())


def _state_for_phase(state, txs, phase):
  return state.replace(opt_state=txs[phase].init(state.params))


def _agreed(total: int) -> int:
  """Process 0's plan, on every process (their clocks differ)."""
  if jax.process_count() == 1:
    return total
  from jax.experimental import multihost_utils
  return int(multihost_utils.broadcast_one_to_all(np.int32(total)))


def _unfreeze(state: TrainState, txs, total: int) -> TrainState:
  """Phase 1 -> 2: a fresh optimizer state for the backbone (its schedule spanning `total`
  steps), the heads' carried over."""
  fresh = with_total(txs[2].init(state.params), total)
  old_inner, new_inner = state.opt_state.inner_states, fresh.inner_states
  merged = dict(new_inner)
  merged['head'] = old_inner['head']
  return state.replace(opt_state=fresh._replace(inner_states=merged))


def evaluate(eval_step, state, val_ds, data_sharding, writer, step,
             task: tasks.Task) -> dict[str, float]:
  """Mean validation metrics over `val_ds`, written with an image summary of its first batch."""
  sums, n, shown = {}, 0, None
  for batch in val_ds.as_numpy_iterator():
    metrics, out = eval_step(_variables(state), _global_batch(batch, data_sharding))
    metrics = jax.device_get(metrics)
    for k, v in metrics.items():
      sums[k] = sums.get(k, 0.0) + float(v)
    n += 1
    if shown is None:
      shown = (batch, jax.device_get(out))
  if not n:
    return {}
  result = {f'val_{k}': v / n for k, v in sums.items()}
  writer.write_scalars(step, result)
  if shown is not None:
    writer.write_images(step, {task.image_summary: task.draw(*shown)})
  logging.info('step %d validation: %s', step,
               ', '.join(f'{k} {v:.4f}' for k, v in sorted(result.items())))
  return result


def _flat_config(config) -> dict[str, Any]:
  flat = flax.traverse_util.flatten_dict(config.to_dict(), sep='.')
  return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in flat.items()}
