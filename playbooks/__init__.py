"""llmkit pyinfra deploys for bare-metal and AWS model hosts, proxies and monitoring."""
