"""The chip dataset on disk ("store"): Zarr arrays, a GeoParquet index, a manifest.

::

    my-dataset/
      chips.zarr/      Zarr v3 group: image (N, [T,] C, H, W) in the source dtype, one chip
                       per chunk (or per inner chunk of a shard); mask (N, H, W) uint8 when
                       there are labels or cloud masks (255 = ignore)
      index.parquet    GeoParquet, one row per chip, in the order of the arrays
      stats.json       band statistics per split and band, and their histograms
      manifest.json    format, config, versions, layout, counts, stats; written last

A store is complete when ``manifest.json`` exists. Chunk files are written atomically
(temporary file + rename, by Zarr's local store), one writer per chunk or shard; the index
and the manifest are written last, atomically. Nothing is pickled.

Where things are: the format's constants and layout in :mod:`~geochip.store.format`, what
the index records per chip in :mod:`~geochip.store.stats`, writing in
:mod:`~geochip.store.writer` (:func:`~geochip.store.writer.write_store`, and the
:class:`~geochip.store.writer.StoreWriter` that ``geochip build`` uses), reading in
:mod:`~geochip.store.reader`, checks in :mod:`~geochip.store.check`, pictures in
:mod:`~geochip.store.viz`, band statistics in :mod:`~geochip.store.bandstats`, the report
page in :mod:`~geochip.store.report`. Datacube files (NetCDF/Zarr cubes, not chip datasets) are
:mod:`~geochip.store.cubes`.
"""
