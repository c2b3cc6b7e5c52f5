from aura_ops.cli import run

run()
