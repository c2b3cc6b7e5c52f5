"""aura-ops: verified snapshots, transactional deploys and real rollbacks."""

__version__ = "0.1.0"
