"""The ``medseg`` commands that are not LightningCLI's: one module per command, each with ``main(argv)``
returning the exit status. Argument parsing, printing and exit codes live here; the work is done by the
library (``medseg.data``, ``medseg.inference``, ``medseg.evaluation``, ``medseg.reporting``)."""
