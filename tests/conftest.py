"""Shared test setup.

torchvision's compiled ops crash the process when loaded after TensorFlow
(seen with tensorflow-cpu 2.21 and torchvision 0.29.1), so the oracle is
imported first, before any test module pulls in TensorFlow.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

try:  # Import order matters; see the module docstring.
  import torchvision  # noqa: F401
except ImportError:
  pass
