"""One scenario on a running lab: preflight, probes, tools, events, expectations."""
