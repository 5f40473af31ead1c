"""The way to the hosts: shipping remote helpers and the per-host agent."""
