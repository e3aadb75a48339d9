"""Measuring a policy: Pass@1 and token statistics, result files, plots.

- :mod:`~rllib_k15.evaluation.evaluate`: evaluate a rollout engine on an env's problems,
  result rows and their summaries;
- :mod:`~rllib_k15.evaluation.plots`: token-efficiency and run-comparison plots and tables.
"""
