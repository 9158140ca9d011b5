from ..errors import InvalidInput

"""Media types of the OCI image spec and Docker's schema 2, and how they map onto each other."""

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_INDEX = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_INDEX)
ALL_MANIFESTS = MANIFESTS + INDEXES

COMPRESSIONS = ("gzip", "zstd", "none")


def is_index(media_type: str) -> bool:
    return media_type in INDEXES


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFESTS


def layer_type(compression: str, docker: bool = False) -> str:
    """The layer media type for a compression; Docker schema 2 knows only gzip."""
    if compression not in COMPRESSIONS:
        raise InvalidInput(f"unknown compression {compression!r} (gzip, zstd or none)")
    if docker:
        if compression != "gzip":
            raise InvalidInput(
                f"Docker schema 2 layers must be gzip, not {compression}: use OCI media types"
            )
        return DOCKER_LAYER_GZIP
    return {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER}[compression]


def layer_compression(media_type: str) -> str:
    """The compression a layer media type declares ('none' for a plain tar)."""
    if media_type.endswith("+gzip") or media_type.endswith(".tar.gzip"):
        return "gzip"
    if media_type.endswith("+zstd"):
        return "zstd"
    return "none"
