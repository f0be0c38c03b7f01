"""What goes in and out: configs, checkpoints in both published layouts, one-call loading, media files."""
