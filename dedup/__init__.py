"""dedup stage package (see DESIGN.md)."""
