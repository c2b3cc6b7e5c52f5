from aura_ops.cli import main

main()
