"""The one place cropjax talks to orbax.

Two kinds of item: converted weights (`save_variables` / `load_variables`: a
directory holding a pytree of arrays, 'variables', and a small JSON record,
'meta'), and training checkpoints (`manager`, `save`, `restore_latest`: an
orbax CheckpointManager keeping the last K steps and the best by a validation
metric). orbax writes into a temporary directory and renames it when complete,
so a crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint directory is missing or unreadable."""


def save_variables(directory: str | os.PathLike, variables: Any, meta: dict[str, Any],
                   *, overwrite: bool = False) -> str:
  """Writes `variables` and `meta` to `directory` atomically; returns its path."""
  path = os.path.abspath(os.fspath(directory))
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f'{path}: already exists (pass overwrite=True to replace it)')
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(path, ocp.args.Composite(variables=ocp.args.StandardSave(variables),
                                        meta=ocp.args.JsonSave(meta)), force=overwrite)
  return path


def load_variables(directory: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
  """Reads what `save_variables` wrote: (variables as numpy arrays, meta)."""
  path = os.path.abspath(os.fspath(directory))
  if not os.path.isdir(os.path.join(path, 'variables')):
    raise CheckpointError(f'{path}: not a cropjax weights directory '
                          "(no 'variables' item inside)")
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    restored = ckptr.restore(path, ocp.args.Composite(
        variables=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  return restored['variables'], dict(restored['meta'] or {})


def manager(directory: str | os.PathLike, keep: int, best_metric: str | None = None,
            best_keep: int = 1) -> ocp.CheckpointManager:
  """A CheckpointManager keeping the latest `keep` steps and the best by `best_metric`."""
  policies = [ocp.checkpoint_managers.LatestN(n=keep)]
  if best_metric:
    policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=lambda metrics: metrics[best_metric], n=best_keep,
        keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies), create=True)
  return ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any,
         metrics: dict[str, float] | None = None) -> None:
  """Saves `state` at `step` (asynchronously; atomic once finished)."""
  mngr.save(step, args=ocp.args.StandardSave(state), metrics=dict(metrics or {}) or None)


def restore_latest(mngr: ocp.CheckpointManager, abstract_for: Callable[[int], Any]) -> Any | None:
  """The latest saved state, shaped like `abstract_for(step)`; None when there is none;
  CheckpointError naming it when it holds a state of another shape (another config's)."""
  step = mngr.latest_step()
  if step is None:
    return None
  target = abstract_for(step)
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
  try:
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  except ValueError as e:
    if 'tree structures do not match' not in str(e):
      raise
    raise CheckpointError(
        f'{mngr.directory}/{step}: its training state does not fit this model and optimizer (a '
        'checkpoint of another config, or of a cropjax before the optimizer kept its schedule '
        'in its state); its weights still load for prediction, but training cannot resume '
        'from it: train in a new workdir') from None
