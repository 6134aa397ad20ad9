"""agentbot Discord adapter."""
