"""The OpenAI-compatible gateway: auth, limits, the inference service and its routes."""
