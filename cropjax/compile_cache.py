"""XLA's compiled programs kept on disk between runs (JAX's persistent compilation cache).

    from cropjax import compile_cache
    compile_cache.enable()   # before the first compilation

A console program's run spends most of its time compiling: `cropjax-predict A B`
took 18 s on 2 CPU cores, of which the prediction itself 0.05 s, and about 8 s
with the programs read back from this cache. The console programs (predict,
find, eval, train) call `enable`; a program of your own may too.

Where: `$CROPJAX_COMPILATION_CACHE` (a folder), else `$XDG_CACHE_HOME/cropjax/xla`
(`~/.cache/cropjax/xla`), in a subfolder per machine: JAX's cache key names the
backend ('cpu') but not the processor's instruction sets, and a program compiled
for one CPU may not run on another (a home folder shared between an AMD EPYC and
an Intel Xeon with AMX). `CROPJAX_COMPILATION_CACHE=0` turns it off; a cache folder
the user already gave JAX (`JAX_COMPILATION_CACHE_DIR`) is used as it is. The
folder is made readable by its owner only: JAX trusts what it reads there.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from pathlib import Path

ENV = 'CROPJAX_COMPILATION_CACHE'
# Programs that took at least this long to compile are kept (JAX's default is 1 s; the
# alignment stages and the network's smaller shapes take 0.3-1 s each).
MIN_COMPILE_SECS = 0.25
# The cache's size at most, where JAX can evict (it needs the filelock package for that).
MAX_BYTES = 2 << 30


def default_root() -> Path:
  """The cache's root folder: $CROPJAX_COMPILATION_CACHE, else $XDG_CACHE_HOME/cropjax/xla."""
  given = os.environ.get(ENV)
  if given and given != '0':
    return Path(given).expanduser()
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return Path(base) / 'cropjax' / 'xla'


def cpu_identity() -> str:
  """What a compiled program depends on beyond JAX's key: the architecture and, where the OS
  says (Linux's /proc/cpuinfo), the processor's model and instruction-set flags."""
  parts = [platform.system(), platform.machine(), platform.processor()]
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      text = f.read()
  except OSError:
    text = ''
  first = text.split('\n\n', 1)[0]  # the first processor's entry
  for line in first.splitlines():
    key = line.split(':', 1)[0].strip().lower()
    if key in ('vendor_id', 'model name', 'flags', 'features', 'cpu implementer', 'cpu part'):
      parts.append(line.strip())
  return '\n'.join(parts)


def machine_key(identity: str | None = None) -> str:
  """The per-machine subfolder's name: a short hash of `cpu_identity()`."""
  identity = cpu_identity() if identity is None else identity
  return hashlib.sha256(identity.encode()).hexdigest()[:16]


def enable(root: str | os.PathLike | None = None, *,
           min_compile_secs: float = MIN_COMPILE_SECS) -> Path | None:
  """Turns on JAX's persistent compilation cache in `root` (default `default_root()`)/machine
  key, before the first compilation. Returns the folder, or None where it is off
  (`CROPJAX_COMPILATION_CACHE=0`), where the user already chose a folder for JAX (kept), or
  where the folder cannot be made (then programs are compiled as without it)."""
  if os.environ.get(ENV) == '0':
    return None
  import jax
  if jax.config.jax_compilation_cache_dir:  # the user's own (JAX_COMPILATION_CACHE_DIR)
    return None
  folder = Path(root).expanduser() if root is not None else default_root()
  folder = folder / machine_key()
  try:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
  except OSError as e:
    logging.warning('cropjax: no compilation cache (%s: %s); compiling as usual', folder, e)
    return None
  jax.config.update('jax_compilation_cache_dir', str(folder))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', float(min_compile_secs))
  try:
    import filelock  # noqa: F401 -- JAX evicts old entries only with it
    jax.config.update('jax_compilation_cache_max_size', MAX_BYTES)
  except ImportError:
    pass
  return folder
