"""Tools the agent can call: the decorator and registry (:mod:`agent.tools.registry`) and the built-in
tools. Their public names are exported once, by :mod:`agent`."""
