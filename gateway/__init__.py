"""sshgw: an SSH jump gateway into Docker containers."""

__version__ = "0.1.0"
