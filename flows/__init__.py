"""flows stage package (see DESIGN.md)."""
