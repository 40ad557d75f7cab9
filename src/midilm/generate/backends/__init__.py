"""Generation backends: what scores the next token (transformers, llama.cpp) or runs the whole loop (vLLM)."""

BACKENDS = ("transformers", "llamacpp", "vllm")
