"""The one place cropjax talks to orbax.

A saved item is a directory holding a pytree of arrays ('variables') and a small
JSON record ('meta'). orbax writes into a temporary directory and renames it
when complete, so a crash never leaves a half-written checkpoint under the
final name.
"""

from __future__ import annotations

import os
from typing import Any

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
