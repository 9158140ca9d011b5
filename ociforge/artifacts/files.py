"""The files of a model's weights: gathered from the paths given, checked, typed and grouped.

Everything here is decided from the files' names, sizes and bytes, never from where they are on
disk, their owners or their mtimes, so the same files give the same layers on any machine:

- a file given by name lands at ``<basename>``, a folder's files at their paths inside it;
- symlinks inside a folder are followed when they stay inside it (their target's bytes are
  stored), refused when they point out of it or nowhere;
- modes become ``0644`` (``0755`` when the owner may execute), so any uid can read them;
- each file has a *role* (ModelPack's ``weight``, ``weight.config``, ``doc``, ``code``,
  ``dataset``), from its name;
- a large file whose first MiBs do not compress (safetensors, GGUF, most ``.bin``) is stored
  uncompressed: :func:`compresses` decides on the bytes themselves.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from zlib_ng import zlib_ng

from ..errors import InvalidInput, NotFound
from ..oci.layer import image_path

# A file of at least this size gets a layer of its own; smaller ones share one.
LARGE = 8 << 20
# How much of a file's start is compressed to decide whether compressing it is worth it, and
# the saving under which it is not (deflate level 1: fast, and what a weight file's randomness
# defeats at any level).
SAMPLE = 4 << 20
MIN_SAVING = 0.10

ROLES = ("weight", "weight.config", "doc", "code", "dataset")

_WEIGHT_EXT = {
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".ggml": "ggml",
    ".onnx": "onnx",
    ".bin": "pytorch",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".ckpt": "pytorch",
    ".h5": "keras",
    ".keras": "keras",
    ".pb": "tensorflow",
    ".tflite": "tflite",
    ".msgpack": "flax",
    ".npz": "numpy",
    ".npy": "numpy",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".joblib": "joblib",
    ".mlmodel": "coreml",
    ".params": "mxnet",
    ".ot": "ot",
    ".xgb": "xgboost",
    ".ubj": "xgboost",
    ".lgb": "lightgbm",
    ".cbm": "catboost",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
}
_CONFIG_EXT = {".json", ".yaml", ".yml", ".toml", ".model", ".tiktoken", ".spm", ".vocab"}
_CONFIG_NAMES = {"vocab.txt", "merges.txt", "added_tokens.txt", "tokenizer.txt"}
_DOC_EXT = {".md", ".rst", ".txt", ".pdf", ".html", ".adoc"}
_DOC_STEMS = {"readme", "license", "licence", "notice", "copying", "authors", "changelog"}
_CODE_EXT = {
    ".py", ".sh", ".ipynb", ".js", ".ts", ".c", ".cc", ".cpp", ".h", ".hpp", ".cu", ".go",
    ".rs", ".java", ".jinja", ".j2", ".r", ".jl", ".lua",
}  # fmt: skip
_DATASET_EXT = {".csv", ".tsv", ".parquet", ".jsonl", ".arrow", ".tfrecord", ".avro", ".feather"}


@dataclass(frozen=True)
class WeightFile:
    """One file to ship: its path in the artifact (``a/b.json``), where its bytes are, its size
    and normalized mode."""

    path: str
    source: str
    size: int
    mode: int

    @property
    def role(self) -> str:
        return role_of(self.path)

    @property
    def large(self) -> bool:
        return self.size >= LARGE


def role_of(path: str) -> str:
    """ModelPack's layer role for a file, from its name."""
    name = posixpath.basename(path).lower()
    stem, ext = posixpath.splitext(name)
    if ext in _WEIGHT_EXT:
        return "weight"
    if name in _CONFIG_NAMES or ext in _CONFIG_EXT:
        return "weight.config"
    if stem in _DOC_STEMS or name in _DOC_STEMS or ext in _DOC_EXT:
        return "doc"
    if ext in _CODE_EXT:
        return "code"
    if ext in _DATASET_EXT:
        return "dataset"
    return "weight"


def model_format(files: Iterable[WeightFile]) -> str:
    """The model's format (``safetensors``, ``gguf``, ``onnx``, ``pytorch``...): that of the
    weight files holding the most bytes; empty when no file's name says."""
    totals: dict[str, int] = {}
    for f in files:
        fmt = _WEIGHT_EXT.get(posixpath.splitext(f.path.lower())[1])
        if fmt:
            totals[fmt] = totals.get(fmt, 0) + f.size
    if not totals:
        return ""
    return max(sorted(totals), key=lambda k: totals[k])


def compresses(source: str | os.PathLike, size: int) -> bool:
    """Whether the file's first :data:`SAMPLE` bytes shrink by :data:`MIN_SAVING` under deflate.

    A decision on the bytes alone (the same file decides the same way anywhere): weights whose
    start is noise-like are stored as they are, read and hashed at the speed of the disk.
    """
    return group_compresses([(source, size)])


def group_compresses(items: Iterable[tuple[str | os.PathLike, int]]) -> bool:
    """:func:`compresses` over the files' bytes one after another (their first :data:`SAMPLE`
    bytes in all), for small files that share a layer."""
    head = bytearray()
    for source, size in items:
        if len(head) >= SAMPLE:
            break
        if not size:
            continue
        try:
            with open(source, "rb") as f:
                head += f.read(min(size, SAMPLE - len(head)))
        except OSError as e:
            raise InvalidInput(f"cannot read {source}: {e.strerror}") from None
    if not head:
        return False
    packed = zlib_ng.compress(bytes(head), 1)
    return len(packed) <= len(head) * (1 - MIN_SAVING)


def _mode(st: os.stat_result) -> int:
    return 0o755 if st.st_mode & stat.S_IXUSR else 0o644


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _walk(root: Path, real_root: Path, rel: str, out: dict[str, WeightFile]) -> None:
    try:
        names = sorted(os.listdir(root / rel if rel else root))
    except OSError as e:
        raise InvalidInput(f"cannot read directory {root / rel}: {e.strerror}") from None
    for name in names:
        inner = f"{rel}/{name}" if rel else name
        full = root / inner
        try:
            lst = os.lstat(full)
        except OSError as e:
            raise InvalidInput(f"cannot read {full}: {e.strerror}") from None
        if stat.S_ISLNK(lst.st_mode):
            target = Path(os.path.realpath(full))
            if not _inside(target, real_root):
                raise InvalidInput(
                    f"{full} is a symlink to {os.readlink(full)}, outside {root}: "
                    "copy the file in, or give its target as a path of its own"
                )
            if not target.exists():
                raise InvalidInput(f"{full} is a symlink to {os.readlink(full)}, which is missing")
            if target.is_dir():
                raise InvalidInput(
                    f"{full} is a symlink to a folder; only symlinks to files are followed"
                )
        try:
            st = os.stat(full)
        except OSError as e:
            raise InvalidInput(f"cannot read {full}: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            _walk(root, real_root, inner, out)
        elif stat.S_ISREG(st.st_mode):
            if not os.access(full, os.R_OK):
                raise InvalidInput(f"cannot read {full}: permission denied")
            _add(out, WeightFile(image_path(inner), str(full), st.st_size, _mode(st)))
        else:
            raise InvalidInput(f"{full}: not a regular file, folder or symlink")


def _add(out: dict[str, WeightFile], f: WeightFile) -> None:
    prev = out.get(f.path)
    if prev is not None:
        raise InvalidInput(f"{f.source} and {prev.source} would both be {f.path!r}")
    out[f.path] = f


def collect(paths: Sequence[str | os.PathLike] | str | os.PathLike) -> list[WeightFile]:
    """The files to ship from ``paths`` (files and folders), sorted by their path.

    Raises before anything is read when a path is missing, a symlink leaves its folder, or there
    are no files at all.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise InvalidInput("no weights given: name at least one file or folder")
    out: dict[str, WeightFile] = {}
    for p in paths:
        path = Path(p)
        if not path.exists() and not path.is_symlink():
            raise NotFound(f"{path}: no such file or folder")
        try:
            st = os.stat(path)
        except OSError as e:
            raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            before = len(out)
            _walk(path, Path(os.path.realpath(path)), "", out)
            if len(out) == before:
                raise InvalidInput(f"{path} holds no files")
        elif stat.S_ISREG(st.st_mode):
            if not os.access(path, os.R_OK):
                raise InvalidInput(f"cannot read {path}: permission denied")
            name = Path(os.path.abspath(path)).name
            _add(out, WeightFile(image_path(name), str(path), st.st_size, _mode(st)))
        else:
            raise InvalidInput(f"{path}: not a regular file or folder")
    return [out[k] for k in sorted(out, key=lambda k: tuple(k.split("/")))]
