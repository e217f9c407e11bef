"""cropjax: JAX/Flax models for photo crops.

Two problems: detecting crop pairs (is B a crop of A, which is the original and
where does the crop lie) and auto-cropping (predicting the crop a photographer
would choose, learnt from the crops recorded in their library's XMP metadata).
"""

import os as _os

__version__ = '0.1.0'

# XLA:CPU flags cropjax sets for itself, before JAX starts a backend. Routing
# convolutions to YNNPACK (jaxlib 0.10's default) runs ResNet's 64-channel
# convolutions at about 90 GFLOP/s on a 2-core AVX-512 machine; XLA's own
# convolutions run them at about 150 (docs/benchmarks.md). Matrix products stay
# on YNNPACK. A flag the user already set wins; CROPJAX_XLA_FLAGS=0 disables this.
CPU_XLA_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=individual_dot',)


def _set_xla_flags() -> None:
  if _os.environ.get('CROPJAX_XLA_FLAGS', '1') == '0':
    return
  current = _os.environ.get('XLA_FLAGS', '')
  extra = [f for f in CPU_XLA_FLAGS if f.split('=')[0] not in current]
  if extra:
    _os.environ['XLA_FLAGS'] = ' '.join([current, *extra]).strip()


_set_xla_flags()

# The prediction API, imported on first use (it pulls in JAX and the models).
_INFERENCE = ('predict', 'predict_pairs', 'encode', 'predict_crop', 'predict_crops', 'load_model',
              'Model', 'PairPrediction', 'CropPrediction', 'InputError', 'ModelError')
__all__ = [*_INFERENCE, 'align', 'search']


def __getattr__(name):
  if name in _INFERENCE:
    from cropjax import inference
    return getattr(inference, name)
  if name == 'align':  # exact alignment of a crop inside its original (cropjax.matching)
    from cropjax.matching import align
    return align
  if name == 'search':  # library-scale crop search (cropjax.search)
    import importlib
    return importlib.import_module('cropjax.search')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
