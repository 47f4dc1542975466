"""STAGE 6 — serving: an OpenAI-compatible HTTP API with cross-request batching (`fastaed serve`)."""
