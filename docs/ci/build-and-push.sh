#!/bin/sh
# Build a model image for every platform and push it, with no Docker daemon: the commands both
# CI recipes in this folder run (and that tests/airgap/test_ci_recipes.py runs against a real
# registry). Settings come from the environment the CI job sets:
#
#   IMAGE       where to push, e.g. registry.example.com/team/iris:1 (required)
#   MODEL       FILE.py:OBJECT (default model.py:predict)
#   PLATFORMS   default linux/amd64,linux/arm64
#   LOCK        the committed lock (default ociforge.lock; written by `ociforge fetch` if missing)
#   OCIFORGE_CACHE                 the cache folder the CI keeps between jobs (wheels, .debs, bases)
#   OCIFORGE_REGISTRY_USERNAME / OCIFORGE_REGISTRY_PASSWORD, or DOCKER_CONFIG / REGISTRY_AUTH_FILE
#   PIP_INDEX_URL                  a PyPI mirror or private index, if any
#
# Output: build.json (the pushed reference, index digest, platforms, layers) for later steps.
set -eu
: "${IMAGE:?set IMAGE to the reference to push}"
MODEL="${MODEL:-model.py:predict}"
PLATFORMS="${PLATFORMS:-linux/amd64,linux/arm64}"
LOCK="${LOCK:-ociforge.lock}"
OCIFORGE="${OCIFORGE:-python -m ociforge}"

# 1. Fill the caches (a no-op on a warm cache): the base, the lock, every wheel of every platform.
$OCIFORGE fetch --platform "$PLATFORMS" --lock "$LOCK"
# 2. Build from the caches alone and push; --json for the next steps, exit status 2 on bad input.
$OCIFORGE build "$MODEL" --platform "$PLATFORMS" --lock "$LOCK" --offline --to "$IMAGE" --json > build.json
cat build.json
