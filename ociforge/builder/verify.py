"""``build(verify=True)``: each platform's image, as written, is started the way ``ociforge run``
starts it (bubblewrap; qemu-user for another architecture) and asked the test sample; it must
answer exactly what the local :func:`~ociforge.builder.build.test` answered.

The library check says what should load; this says what does: a wheel that needs a library the
image lacks, a module that imports differently on the other architecture, a model that only
works with the builder's own files. What was written stays written either way: the result (and
:class:`VerificationFailed`, which carries it) says which platforms were verified.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from ociforge_runtime import local

from ..errors import BuildError, InvalidInput
from ..oci.platform import Platform
from ..run import probe, sandbox

VERIFIED = "verified"
_SHOWN = 1500  # characters of an answer or of the server's output shown in the error


class VerificationFailed(BuildError):
    """An image was written but did not answer the test sample as the local test did;
    ``result`` is the build's :class:`~ociforge.builder.build.BuildResult` (``verified`` says
    what each platform did)."""

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message)
        self.result = result


def check_can_verify(verify: bool, test_sample: Any, platforms: Sequence[Platform]) -> None:
    """Before any work: ``verify`` needs a test sample, bubblewrap, and qemu-user for each
    platform of another architecture (the error names the Debian package)."""
    if not verify:
        return
    if test_sample is None:
        raise InvalidInput(
            "verify=True needs test_sample= (--test-sample): the images are asked it and must "
            "answer as the local test did"
        )
    for p in platforms:
        sandbox.check(p)


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + " ..."


def _mismatch(answer: probe.Answer, expected: Any) -> str | None:
    """Why ``answer`` is not the local one, or None when it is."""
    if answer.status == 0:
        out = textwrap.indent(answer.output.strip()[-_SHOWN:], "      ")
        return f"{answer.text}; its output ended with:\n{out}" if out else answer.text
    if answer.status >= 400:
        return f"answered HTTP {answer.status}: {_short(answer.text)}"
    if expected is not None and answer.body != expected:
        return (
            f"answered {_short(answer.text.strip())} where the local test answered "
            f"{_short(json.dumps(expected, separators=(',', ':')))}"
        )
    return None


def verify_images(result: Any, images: Sequence[Any], sample: Any, expected: Any) -> None:
    """Ask each image ``sample``; set ``result.verified`` per platform and raise
    :class:`VerificationFailed` naming each platform that answered otherwise. ``expected`` is
    the local test's answer (None for a model given as a package folder: any success counts)."""
    body, content_type = local.as_body(sample)  # as a client sends it, and test() did
    failed = []
    for img in images:
        p = str(img.platform)
        how = f"under {sandbox.emulator(p)}" if sandbox.emulator(p) else "under bubblewrap"
        print(f"verify: starting the {p} image {how}", file=sys.stderr, flush=True)
        # the model's own error text in an error answer, as the local test shows it
        answer = probe.ask(img, body, content_type, env={"OCIFORGE_ERROR_DETAILS": "1"})
        why = _mismatch(answer, expected)
        result.verified[p] = VERIFIED if why is None else f"not verified: {why}"
        if why is not None:
            failed.append(f"  {p}: {why}")
        print(f"verify: {p}: {result.verified[p]}", file=sys.stderr, flush=True)
    if failed:
        raise VerificationFailed(
            f"{len(failed)} of {len(images)} images did not answer the test sample as the local "
            f"test did; they are written ({result.reference}@{result.digest}) but NOT "
            f"verified:\n" + "\n".join(failed),
            result,
        )
