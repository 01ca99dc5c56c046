"""The ``advbridge`` subcommands, one per module; each adds its `Command` to
`advbridge.evaluations.cli.command.COMMANDS` when imported (the registry imports them all on first read)."""
