"""The degradation study of He et al. 2015 (Fig. 1, Fig. 6, Table 6).

runs.py reads a study's runs, runner.py trains them (experiments/degradation.py),
figures.py and tables.py draw the results from their metrics.jsonl.
"""
