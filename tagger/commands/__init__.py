"""The commands of `tagger`, one module per group; each registers on `tagger.cli_app.app`."""
