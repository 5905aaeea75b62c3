"""Where items come from: STAC APIs and static catalogs, folders of rasters, the sample data."""
