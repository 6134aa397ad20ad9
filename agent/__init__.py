"""agentbot agent library: a provider-neutral ReAct engine. Never imports discord."""
