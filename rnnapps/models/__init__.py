"""Reusable, serializable Keras layers: import them into any Keras model.

Every layer here is registered under the ``rnnapps`` package, so a model that
uses one reloads with plain ``keras.saving.load_model`` once ``rnnapps.models``
is imported.
"""

from rnnapps.models.recurrent import CELL_TYPES, RecurrentStack, SequencePooling
from rnnapps.models.sequence import ClipSequenceLength

__all__ = ["CELL_TYPES", "ClipSequenceLength", "RecurrentStack", "SequencePooling"]
