"""Where items come from: STAC APIs, static catalogs, stac-geoparquet, folders of rasters and
the sample data, all searched through one :class:`~geochip.sources.catalog.Catalog`
interface and returned as normalised ``pystac.Item`` objects.
"""
