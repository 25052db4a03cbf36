"""Helpers for models that compute their own loss (``Model.compute_loss`` overrides)."""

from __future__ import annotations

import keras


def scale_loss_for_replicas(loss):
    """Divide a per-replica mean loss by the replica count under ``tf.distribute``.

    Keras' trainer sums per-replica gradients and unscales the reported loss, so a
    custom per-replica mean must be divided by the replica count, exactly as Keras
    does for compiled losses. A no-op with one replica or another backend.
    """
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss
