"""The llmkit CrossGuard policy pack (see README.md, generated from the rules)."""
