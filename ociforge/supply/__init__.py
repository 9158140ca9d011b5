"""Supply chain: what is in an image (SBOMs) and who built it (cosign-format signatures).

Both travel beside the image, never inside it, so an image's digest stays what the build made:

- :mod:`.sbom` writes SPDX 2.3 or CycloneDX 1.6 documents from what the build installed
  (the base's Debian lock, the wheel locks, ociforge's own layers), byte-for-byte reproducible:
  per image a contents document (the packages, the same for a model-only rebuild) and a small
  image document that names it by sha256;
- :mod:`.referrers` attaches such documents to an image manifest as OCI 1.1 referrers (the
  referrers API where a registry has it, the ``sha256-<hex>`` fallback tag where it does not, and
  the same tag in an OCI layout's ``index.json``);
- :mod:`.keys` reads and writes cosign's key pair format (ECDSA P-256, the private key encrypted
  with scrypt + NaCl secretbox);
- :mod:`.cosign` makes and checks cosign's "simple signing" signatures under the
  ``sha256-<hex>.sig`` tag, which ``cosign verify --key`` and containers/image accept.

Keyless signing (Fulcio certificates, Rekor transparency log entries) is out of scope.
"""
