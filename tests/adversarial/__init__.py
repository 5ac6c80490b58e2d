"""Adversarial tests: hostile remotes, clones, crashes and full disks (issue 9)."""
