"""Writes knn_v2_whitened.npz: a whitened version-2 KNNBaseline artifact, fixed queries and
their scores, as the code before ``block_space`` (main at 5e78d10) wrote and scored them.

    cd <checkout of 5e78d10> && python make_knn_v2_whitened.py knn_v2_whitened.npz
"""

import sys

import numpy as np

from detectors.baseline import KNNBaseline

rng = np.random.default_rng(80)
offsets = rng.standard_normal((10, 16))
vectors = (np.repeat(offsets, 20, axis=0) + rng.standard_normal((200, 16))).astype(np.float32)
groups = np.repeat(np.arange(10), 20)
model = KNNBaseline(k=3, whiten=0.99, index="exact", false_alarm_rate=0.05).fit(vectors, groups)
queries = (rng.standard_normal((12, 16)) * 1.5).astype(np.float32)
np.savez(
    sys.argv[1],
    artifact=np.frombuffer(model.to_bytes(), np.uint8),
    queries=queries,
    scores=model.decision_function(queries),
    threshold=np.float64(model.threshold_),
)
print(model.threshold_, model.whitened_, model.threshold_method_)
