"""The NumPy reference cells, one file per cell; import them from rnncore.reference."""
