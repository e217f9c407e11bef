"""cropjax: JAX/Flax models for photo crops.

Two problems: detecting crop pairs (is B a crop of A, which is the original and
where does the crop lie) and auto-cropping (predicting the crop a photographer
would choose, learnt from the crops recorded in their library's XMP metadata).
"""

__version__ = '0.1.0'
