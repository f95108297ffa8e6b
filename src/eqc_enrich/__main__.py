"""`python -m eqc_enrich`: the command line, for callers that hold an interpreter rather than a PATH entry."""

from eqc_enrich.cli import main

if __name__ == "__main__":
    main()
