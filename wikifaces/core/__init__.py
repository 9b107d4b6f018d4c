"""The ground layer: what every stage may use and nothing of ours above it: the code version,
the data root's layout, atomic files, JSON-lines tables and journals, the data-root lock, image
hygiene, a stage's identity (which config fields decide results), and the user-error type."""
