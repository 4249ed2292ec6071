"""Scenario files -> validated model: YAML with limits, the JSON schema, rules, loading."""
