"""Stage 1: what an utterance is and how it becomes tensors."""
