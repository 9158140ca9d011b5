"""The distribution API: the HTTP client with its retries, token and basic auth,
credentials from docker/podman files and helpers, chunked resumable uploads, cross-repository
mounts, and pull and push of whole images and indexes."""
