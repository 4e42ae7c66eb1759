"""Custom pyinfra facts used by the llmkit deploys."""
