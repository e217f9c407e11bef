"""Library-scale crop search: which photo of a library is each crop from, and where.

    import cropjax
    model = cropjax.load_model('workdirs/demo')             # a siamese matching model
    index = cropjax.search.update_index(['~/Pictures'], 'pictures.cropjax-index', model=model)
    matches, skipped = cropjax.search.find(index, ['crop.jpg'], model=model)
    matches, _ = cropjax.search.find(index, model=model)     # crop relations inside the library

`index` keeps region descriptors and a grey thumbnail of every photo on disk
(incremental, resumable, checked); `find` retrieves candidates by descriptor
similarity, orders the best 300 by template matching on their thumbnails
(`rerank`) and reports only the pairs that alignment and the verdict confirm. Retrieval goes through
faiss where it is installed (`neighbours`); the index can also be built as an
Apache Beam pipeline (`cropjax.search.pipeline`, the beam extra). The console
program is `cropjax-find` (`scripts/find.py`).
"""

from cropjax.search.find import RERANK, Match, candidates, find, shortlist, similarities
from cropjax.search.index import Index, SearchIndexError, open_index, update_index

__all__ = ['RERANK', 'Index', 'Match', 'SearchIndexError', 'candidates', 'find', 'open_index',
           'shortlist', 'similarities', 'update_index']
