"""The OpenAI-compatible service in front of a router (``ttsopt serve``)."""
