"""llmkit: shared code."""
