"""Pure rules of the cell_therapy family (no I/O)."""
