"""Matching a crop to its original: exact alignment and its evidence.

    from cropjax import matching
    a = matching.align(original, crop, box)        # refine a start box (pixels)

`align` / `align_batch` refine a box coarse to fine (see `cropjax.matching.alignment`).
"""

from cropjax.matching.alignment import STAGES, Alignment, AlignError, Pyramid, align, align_batch

__all__ = ['STAGES', 'Alignment', 'AlignError', 'Pyramid', 'align', 'align_batch']
