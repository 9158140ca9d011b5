"""Closed networks: ``fetch`` fills the caches an offline build reads, and bundles carry
images and their build inputs across an air gap to be pushed or rebuilt there."""
