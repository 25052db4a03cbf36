"""rnnapps: end-to-end recurrent-network applications on TensorFlow 2 and Keras 3.

The package root stays free of TensorFlow imports so that ``rnnapps --help``
answers instantly; import layers from :mod:`rnnapps.models`.
"""

__version__ = "0.1.0"
