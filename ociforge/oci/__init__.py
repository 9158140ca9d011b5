"""The image model: digests, media types, platforms, references, manifests, images and
indexes, layers and their tar bytes, the blob store and the layer memo. Everything above builds
on these; they import nothing of ociforge but its errors and file helpers."""
