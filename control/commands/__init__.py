"""One module per `sluice` command group; control/cli.py assembles them."""
