#!/bin/sh
# Build a model image for every platform and push it, with no Docker daemon: the commands both
# CI recipes in this folder run (and that tests/airgap/test_ci_recipes.py runs against a real
# registry). Settings come from the environment the CI job sets:
#
#   IMAGE       where to push, e.g. registry.example.com/team/iris:1 (required)
#   MODEL       FILE.py:OBJECT (default model.py:predict)
#   PLATFORMS   default linux/amd64,linux/arm64
#   LOCK        the committed lock (default ociforge.lock; written by `ociforge fetch` if missing)
#   CACHE       the registry cache, REGISTRY/REPO (default: IMAGE's repository): where the layers
#               of earlier builds are found by what they are made of, so a fresh runner downloads
#               no wheel and no .deb it already built from; the job must be able to push there
#   OCIFORGE_REGISTRY_USERNAME / OCIFORGE_REGISTRY_PASSWORD, or DOCKER_CONFIG / REGISTRY_AUTH_FILE
#   PIP_INDEX_URL                  a PyPI mirror or private index, if any
#
# No CI cache to keep between jobs: the registry is the cache.
# Output: build.json (the pushed reference, index digest, platforms, layers) for later steps.
set -eu
: "${IMAGE:?set IMAGE to the reference to push}"
MODEL="${MODEL:-model.py:predict}"
PLATFORMS="${PLATFORMS:-linux/amd64,linux/arm64}"
LOCK="${LOCK:-ociforge.lock}"
OCIFORGE="${OCIFORGE:-python -m ociforge}"

# 1. The lock, once (commit it: a build from a lock resolves nothing).
if [ ! -f "$LOCK" ]; then
    $OCIFORGE fetch --platform "$PLATFORMS" --lock "$LOCK"
fi
# 2. Build and push: each layer's key is looked up in the registry cache before anything is
#    fetched; only what the cache lacks is downloaded and built, and left there for next time.
#    --json for the next steps, exit status 2 on bad input.
$OCIFORGE build "$MODEL" --platform "$PLATFORMS" --lock "$LOCK" --to "$IMAGE" \
    ${CACHE:+--cache "$CACHE"} --json > build.json
cat build.json
