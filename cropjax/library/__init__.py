"""Photo libraries: reading what photographers keep (`raw`: camera raw files through rawpy;
`catalog`: crops from a Lightroom Classic catalog)."""

from cropjax.library.raw import RAW_EXTENSIONS, RawImage, RawInfo, RawSupportError, is_raw
from cropjax.library.catalog import Catalog, CatalogError, CatalogPhoto, read_catalog
