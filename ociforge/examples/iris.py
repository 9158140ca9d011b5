"""The bundled example: a scikit-learn classifier of iris flowers, served by a predict function.

Trained at build time from the copy of the iris data that ships inside scikit-learn (no download).
The image answers ``POST /predict`` with ``[[5.1, 3.5, 1.4, 0.2], ...]`` → ``["setosa", ...]``.
"""

from __future__ import annotations

from ..errors import OciforgeError

SAMPLE = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def train():
    """A fitted model and the class names; deterministic (fixed solver, no randomness)."""
    try:  # scikit-learn is the example's own extra (pip install ociforge[example])
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise OciforgeError(
            "the example model needs scikit-learn on this machine: pip install 'ociforge[example]'"
        ) from None
    data = load_iris()
    clf = LogisticRegression(max_iter=500).fit(data.data, data.target)
    return clf, [str(n) for n in data.target_names]


def make_model():
    """The predict function that goes into the image (pickled by value with its fitted model)."""
    clf, names = train()

    def predict(rows):
        import numpy as np

        x = np.asarray(rows, dtype=float)
        if x.ndim == 1:
            x = x[None, :]
        return [names[i] for i in clf.predict(x)]

    return predict


METADATA = {
    "description": "Logistic regression on the iris data set: four measurements in, a species out.",
    "authors": ["ociforge"],
    "license": "BSD-3-Clause",
    "inputs": [{"name": "rows", "datatype": "FP64", "shape": [-1, 4]}],
    "outputs": [{"name": "species", "datatype": "BYTES", "shape": [-1]}],
}
