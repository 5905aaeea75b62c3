"""Choosing scenes: periods, cloud ranking with bounded relaxation, cloud cover counted from
quality bands, label-driven selection and the selection table.
"""
