"""The recipes of ociforge's prebuilt bases, installed as package data (``ociforge_base_layers``)."""
