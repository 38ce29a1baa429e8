"""The benchmark's numbered items, one module each; ``bench/run.py`` says
which module serves which number and runs the ones asked for."""
