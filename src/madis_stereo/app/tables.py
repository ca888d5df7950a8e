"""Plain-text tables for the command line: :func:`~madis_stereo.utils.tables.format_table` (it lives in utils
so that the trainer's console can use it too)."""

from madis_stereo.utils.tables import format_table

__all__ = ["format_table"]
