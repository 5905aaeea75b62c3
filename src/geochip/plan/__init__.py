"""The chip index before any pixel is read: chips on grids, sliding windows over scenes, and
leakage-free splits.
"""
