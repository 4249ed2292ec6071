"""What a run leaves on the host: the bundle, its checks, JUnit and the report."""
