"""The offline sweep: configs and presets, units and their executors (local, Ray), the outcome store and its Parquet snapshots, and the tables `ttsopt sweep` prints."""
