"""scraping stage package (see DESIGN.md)."""
