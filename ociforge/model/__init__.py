"""The model in: what its pickle imports (the user's own modules, the distributions it needs)
and the package the image carries (``model.pkl`` and ``model.json``)."""
