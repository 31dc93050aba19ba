"""Measuring a frozen encoder's representations: linear probe and weighted k-NN on cached features.

Typical use (the ``vitzoo linprobe`` / ``vitzoo knn`` commands)::

    spec = feature_spec(model, cfg.probe_block, cfg.probe_pool)   # which block, pooling, norm
    encoder = FrozenEncoder(model, spec)                           # cut after that block, no grad
    train, val = (extract_features(encoder, loader, device) for loader in (train_loader, val_loader))
    head = train_linear_probe(train, num_classes, ProbeSettings(epochs, lr, batch_size, seed))
    evaluate_probe(head, val)       # {'Loss', 'Top1-Acc', 'Top5-Acc'}
    knn_classify(train, val, num_classes, k=20, t=0.07)             # {'Top1-Acc', 'Top5-Acc'}
"""
from __future__ import annotations

from vitzoo.probe.features import Features, FeatureSpec, FrozenEncoder, extract_features, feature_spec
from vitzoo.probe.knn import knn_classify, knn_votes
from vitzoo.probe.linear import ProbeSettings, build_head, evaluate_probe, train_linear_probe

__all__ = [
    "FeatureSpec",
    "Features",
    "FrozenEncoder",
    "ProbeSettings",
    "build_head",
    "evaluate_probe",
    "extract_features",
    "feature_spec",
    "knn_classify",
    "knn_votes",
    "train_linear_probe",
]
