"""What tests that watch a live training process read from its run directory."""

import json


def mid_epoch_backup(output):
    """The metadata of a run's backup under ``output`` when it was taken mid-epoch after at least one finished epoch."""
    for metadata_path in output.glob("*/*/backup/training_metadata.json"):
        try:
            metadata = json.loads(metadata_path.read_text())
        except (OSError, ValueError):
            return None  # replaced between glob and read: look again
        if metadata["batch"] is not None and metadata["epoch"] >= 1:
            return metadata
    return None
