"""fentry-lab: a VM-based lab for studying kernel tracing with eBPF fentry/fexit probes."""
