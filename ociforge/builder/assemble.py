"""A general image assembler (what ``crane append`` and ``crane mutate`` do together).

Local files and folders become layers (one layer per ``--add``, shared by every platform: the
same files give the same digest), appended on top of a base image or on scratch, with config
changes. For a multi-platform base, the same layers go on top of each platform's image and the
result is an index. Base layers are reused by digest, never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..cachedir import default_cache_dir
from ..errors import InvalidInput
from ..oci.blobstore import BlobStore
from ..oci.image import ConfigChanges, Image, ImageIndex, append, make_index, store_source
from ..oci.layer import Layer, entries_from_tree, write_layer
from ..oci.platform import Platform, parse_platforms
from ..transports.spec import recorded_name


@dataclass(frozen=True)
class Addition:
    """A local path and where it lands in the image (``LOCAL:IMAGE``)."""

    local: str
    image: str
    ignore: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Addition:
        local, sep, dest = text.rpartition(":")
        if not sep or not local or not dest:
            raise InvalidInput(f"--add {text!r}: expected LOCAL_PATH:IMAGE_PATH")
        return cls(local, dest)


def add_layers(
    additions: Sequence[Addition], store: BlobStore, compression: str = "gzip", docker: bool = False
) -> list[Layer]:
    """One layer per addition; every addition is checked before anything is written."""
    entry_lists = [list(entries_from_tree(a.local, a.image, a.ignore)) for a in additions]
    return [write_layer(entries, store, compression, docker=docker) for entries in entry_lists]


def assemble(
    base: Image | ImageIndex | None,
    additions: Sequence[Addition],
    *,
    platforms: Sequence[str | Platform] = (),
    changes: ConfigChanges | None = None,
    compression: str = "gzip",
    docker: bool = False,
    annotations: dict[str, str] | None = None,
    store: BlobStore | None = None,
    base_name: str | None = None,
) -> Image | ImageIndex:
    """The new image (one platform) or index (several) built from ``base`` plus ``additions``.

    ``base_name`` is where the base was read from; only a registry reference is recorded."""
    store = store or BlobStore(default_cache_dir())
    plats = parse_platforms(platforms) if platforms else []
    if base is None:
        if not plats:
            raise InvalidInput("an image without a base needs --platform")
        bases: list[tuple[Platform, Image | None]] = [(p, None) for p in plats]
    elif isinstance(base, ImageIndex):
        wanted = plats or base.platforms
        bases = [(p, base.select(p)) for p in wanted]
    else:
        if plats and not all(p.matches(base.platform) for p in plats):
            raise InvalidInput(
                f"the base is a {base.platform} image; it cannot serve {', '.join(map(str, plats))}"
            )
        bases = [(base.platform, base)]
    layers = add_layers(additions, store, compression, docker=docker)
    # the image path only: the local one would make the same files in another folder another image
    history = [f"ociforge assemble: add {a.image}" for a in additions]
    images = [
        append(
            b,
            layers,
            store_source(store),
            platform=p,
            changes=changes,
            history=history,
            annotations=annotations,
            docker=docker or None,
            store=store,
            base_name=recorded_name(base_name),
        )
        for p, b in bases
    ]
    if len(images) == 1 and not isinstance(base, ImageIndex):
        return images[0]
    return make_index(images, annotations=annotations, docker=docker)
