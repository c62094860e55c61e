"""The papers' CIFAR-10 studies: He et al. 2015's degradation study (Fig. 1, Fig. 6, Fig. 7,
Table 6) and He et al. 2016's identity-mappings study (Tables 1-2, Fig. 4, Fig. 6).

studies.py defines each study as data (config file, networks, presets, figures, the paper's
numbers in papers.py); runner.py trains any of them (experiments/degradation.py,
experiments/identity_mappings.py); runs.py reads a study's runs; figures.py,
identity_figures.py and tables.py draw the results from their metrics.jsonl, and responses.py
Fig. 7 from the final checkpoints.
"""
