"""Deployment manifests for a model image: KServe ``InferenceService``, Seldon Core
``SeldonDeployment``, or a plain ``Deployment`` + ``Service`` (see ``manifests``)."""

from .manifests import KINDS, PROTOCOLS, ImageFacts, manifests, to_json, to_yaml
from .resolve import facts_of, resolve

__all__ = [
    "KINDS",
    "PROTOCOLS",
    "ImageFacts",
    "facts_of",
    "manifests",
    "resolve",
    "to_json",
    "to_yaml",
]
