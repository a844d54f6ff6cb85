"""The command lines, one module per command; each has `main(argv=None, out=None, err=None) -> int`.
Only this package parses arguments and prints (`common` holds what they share)."""
