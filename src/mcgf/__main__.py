"""``python -m mcgf`` runs the command line."""

from mcgf.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
