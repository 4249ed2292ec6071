"""What fentry, fexit, kprobe and kretprobe cost per call, measured on a lab."""
