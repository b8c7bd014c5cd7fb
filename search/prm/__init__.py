"""Process reward models: one adapter per model family, each with its exact input format."""
