"""Python dependencies for a target: wheel tags, resolution, locks, the wheel cache,
installing wheels into layers, sdists, and the bytecode of what an image imports at start."""
