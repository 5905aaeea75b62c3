"""``geochip build``: a YAML config in, a resumable chip dataset out.

The build runs in the pipeline's one direction::

    config ─► grids (+ time steps) ─► plan (chips) ─► split (+ buffer) ─► batches ─► engine ─► store

1. **Grids** (:mod:`~geochip.builder.grids`, :mod:`~geochip.builder.steps`; the catalog
   from :mod:`~geochip.builder.catalog`): from the config's source (the sample catalog, any
   catalog :func:`geochip.open_catalog` opens - STAC API with API keys from environment
   variables, static catalog, ItemCollection, stac-geoparquet - or a folder of rasters):
   one grid per item (its reference band's grid, at another resolution or in another
   CRS); with ``time``, the items sharing a grid stacked per period; with ``selection``,
   one grid per label holding the scenes chosen per period; with ``grid.geometries``, one
   grid per point or polygon holding the scenes found over it. No pixel is read (the
   selection may count clouds over label footprints).
2. **Plan** (:mod:`~geochip.builder.plan`): chips over every grid (``plan_chips``), then the
   split (blocks, regions, random or none) and the buffer, all before any read; a random
   split of overlapping chips is refused unless the config insists.
3. **Batches** (:mod:`~geochip.builder.tasks`): runs of whole chunk files (shards) of the
   arrays, each a small plain-data task (:class:`~geochip.builder.tasks.BatchTask`: the
   chips' windows, the grids with their items as STAC dicts with unsigned hrefs, the label
   shapes near those chips, GDAL options without credentials, how to read: masks, composite,
   gap-filling, scaling, the signer's import path).
4. **Engine**: threads, a local Dask cluster or a remote scheduler run
   :func:`~geochip.builder.tasks.run_batch` (pixels: :mod:`~geochip.builder.pixels`): it
   loads each row of chips of a batch with odc-stac onto the chips' own grid (retrying
   transient errors, signing hrefs just before the read), masks clouds, builds time stacks
   chip by chip, burns or aligns the labels, writes the batch's chunk files (one writer per
   chunk) and then a batch record (atomic JSON) with the hashes of those files. A chip whose
   read still fails is recorded as ``failed`` with its error, never as silent nodata, and
   the build ends with a non-zero status.
5. **Store** (:mod:`~geochip.builder.run`): the selection table (with ``selection``), the
   index and the manifest are written last, from the records.

**Resume** (:mod:`~geochip.builder.resume`). The build keeps its state in
``<out>/.geochip/`` (the config, the plan's fingerprint, one record per finished batch). Run
the same command again (or with ``--resume``) after an interruption (Ctrl-C, ``kill -9``, a
lost worker): batches whose record is there and whose chunk files still hash to it are
skipped, the others are redone, and the result is byte-identical to an uninterrupted build.
A changed config is refused, naming the fields that differ.

The config's schema is :mod:`geochip.builder.config`.
"""
