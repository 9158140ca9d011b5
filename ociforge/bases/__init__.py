"""Base images: Debian archives (signed, hashed, locked) and the recipes built from them,
any image as a base, and the Python found in a base."""
