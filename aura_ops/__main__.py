from aura_ops.cli.commands import main

main()
