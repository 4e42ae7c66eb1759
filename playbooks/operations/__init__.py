"""Custom pyinfra operations used by the llmkit deploys."""
