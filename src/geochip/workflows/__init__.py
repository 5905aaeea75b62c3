"""Whole jobs built from the stages: the demo, time series per geometry (SITS) and image/label
pairs (LandCoverNet).
"""
