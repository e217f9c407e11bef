"""Shared test setup.

torchvision's compiled ops crash the process when loaded after TensorFlow
(seen with tensorflow-cpu 2.21 and torchvision 0.29.1), so the oracle is
imported first, before any test module pulls in TensorFlow.
"""

import os

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# On a GPU, JAX takes three quarters of its memory at the first use in each process; the suite
# runs in several (xdist's workers and the subprocesses tests start), so each takes only what it
# uses. No effect on the CPU.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

try:  # Import order matters; see the module docstring.
  import torchvision  # noqa: F401
except ImportError:
  pass


# The session's compilation cache folder, made by pytest-xdist's controller and shared by its
# workers (they inherit the environment), so a program one worker compiled the other reads back.
_SHARED = 'CROPJAX_TEST_JAX_CACHE'
_MAX_BYTES = 1 << 30  # set, JAX locks the cache's entries (with `filelock`) and evicts past it


def pytest_configure(config):
  """One persistent JAX compilation cache for the session (a fresh temporary folder, shared by
  pytest-xdist's workers and given to the subprocesses their tests start): the many tiny
  training runs and verdict fits compile the same programs, and a cached executable is the same
  executable, so results do not change. Its entries are read and written under JAX's file lock
  (`jax_compilation_cache_max_size` set), so one process never reads another's half-written
  entry."""
  import tempfile
  worker = hasattr(config, 'workerinput')
  if worker and os.environ.get(_SHARED):
    folder = os.environ[_SHARED]  # the controller's, removed by it
  else:
    folder = tempfile.mkdtemp(prefix='cropjax-test-jax-cache-')
    config._cropjax_jax_cache = folder  # removed when the session ends (pytest_unconfigure)
    os.environ[_SHARED] = folder
  os.environ['JAX_COMPILATION_CACHE_DIR'] = folder
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.5'
  try:
    import filelock  # noqa: F401 -- JAX locks its cache's entries only with it
    locked = True
    os.environ['JAX_COMPILATION_CACHE_MAX_SIZE'] = str(_MAX_BYTES)
  except ImportError:
    locked = False
  if getattr(config.option, 'numprocesses', None) and not worker:
    return  # the controller runs no test: its workers (and their subprocesses) read the env
  import jax
  jax.config.update('jax_compilation_cache_dir', folder)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  if locked:
    jax.config.update('jax_compilation_cache_max_size', _MAX_BYTES)
  # On a GPU or TPU, XLA multiplies float32 in TF32 or bfloat16 passes by default (relative
  # errors near 1e-3); the tests compare with float32 oracles, so they ask for full float32
  # there. The CPU computes float32 in full either way.
  if jax.default_backend() != 'cpu':
    jax.config.update('jax_default_matmul_precision', 'highest')


def pytest_xdist_auto_num_workers(config):
  """`-n auto` (setup.cfg): a worker a core, at most 4 (each holds JAX, TensorFlow and PyTorch,
  about 3 GB, and a file's tests run on one worker, so more rarely pay)."""
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    cores = os.cpu_count() or 1
  return max(1, min(4, cores))


def pytest_unconfigure(config):
  """The session's compilation cache goes with it (about 15 MB a full run, else left in /tmp)."""
  import shutil
  folder = getattr(config, '_cropjax_jax_cache', None)
  if folder:
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope='session')
def photo_folder(tmp_path_factory):
  """12 small procedural photos (JPEG) that the tests' tiny models train on; only read."""
  from PIL import Image

  from cropjax import procedural
  folder = tmp_path_factory.mktemp('photos')
  for i, a in enumerate(procedural.images(5, 12, (96, 128))):
    Image.fromarray(a).save(folder / f'p{i:02d}.jpg')
  return folder


@pytest.fixture(scope='session')
def match_model(photo_folder, tmp_path_factory):
  """A tiny siamese matching model as the demo's (each image at its own aspect ratio), with its
  verdict, trained once for the session's tests."""
  from configs import tiny
  from cropjax import inference
  from cropjax import train
  root = tmp_path_factory.mktemp('match-model')
  c = tiny.get_config()
  c.data.source = str(photo_folder)
  c.data.data_dir = str(root / 'tfds')
  c.num_steps, c.freeze_steps, c.eval_every = 2, 0, 2
  c.verdict_photos = 6
  c.model.pair_head = 'match'
  c.data.pair_options.keep_aspect = True
  train.train_and_evaluate(c, str(root / 'wd'))
  return inference.load_model(root / 'wd')
