"""Pixels: scenes opened by their headers and read window by window, chip streams with shared
tile decoding, cubes loaded with odc-stac, the cube operations (masks, composites, gap-
filling, scaling) and labels on a grid.
"""
