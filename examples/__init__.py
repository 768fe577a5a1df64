"""Example job packages: each is what a job of your own looks like, ready to copy."""
