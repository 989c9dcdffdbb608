"""The SSH server: the only place that speaks asyncssh's server API."""
