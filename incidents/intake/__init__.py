"""Witness-facing blueprint: the report form and the receipt page."""
