"""The kernel matrix: one scenario on several Debian releases, and the table that compares them."""
