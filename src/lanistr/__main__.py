from lanistr.cli import entry

entry()
