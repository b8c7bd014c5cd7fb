"""The model engines under the search: policies on transformers, llama.cpp, vLLM and any
OpenAI-compatible server, the presets they load, and the plumbing they share (prompt
formats, stop handling, continuation ids). Backends are imported lazily by
``ttsopt.search.registry``; importing this package loads none of them."""
