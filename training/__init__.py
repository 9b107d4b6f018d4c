"""training stage package (see DESIGN.md)."""
