"""`python -m eqc_enrich ...`: the same command line as `eqc-enrich`."""

from eqc_enrich.cli import main

main()
