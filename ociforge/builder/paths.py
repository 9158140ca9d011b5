"""Where a model image keeps its parts, and who runs it: the contract between the build, the
runtime's environment and ``ociforge bundle rebuild`` (which reads a built image's layers back)."""

ROOT = "/opt/ociforge"
RUNTIME_DIR = f"{ROOT}/runtime"
CODE_DIR = f"{ROOT}/code"
MODEL_DIR = f"{ROOT}/model"
APP_DIR = f"{ROOT}/app"  # WorkingDir: artifacts land here, so relative paths in user code work
USER = "65532:65532"
PORT = 8080
# never copied from the user's folders into a layer
IGNORE = ("__pycache__", "*.pyc", "*.pyo", ".git", ".ipynb_checkpoints")
ANNOTATION_PREFIX = "org.opencontainers.image."
