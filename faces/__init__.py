"""faces stage package (see DESIGN.md)."""
