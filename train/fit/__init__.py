"""Fitting: the training table and its labels, Optuna tuning, the LightGBM selector, the cascade plans and the router artifact `ttsopt train` writes."""
