"""The shared ground floor: GDAL settings and retries, secrets and the href policy, grids,
cloud-mask bits, file handles, task engines, progress, and the small readers every stage
uses (YAML, vector files, import paths, config errors).
"""
