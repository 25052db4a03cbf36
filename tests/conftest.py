import os

# Quiet TensorFlow's C++ banner and keep tests on the CPU, deterministic and hermetic.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TFDS_DATA_DIR", os.path.join(os.path.dirname(__file__), ".no_tfds"))
# Tests never read the real datasets: a loader must be pointed at fixtures explicitly.
os.environ.pop("RNNAPPS_DATA_DIR", None)
