"""Small ``noah`` sub-commands that need no engine (see ``noah.cli.COMMANDS``)."""
