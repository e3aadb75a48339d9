"""Helpers shared by the tests (no tests here): ``from support import toy_env``.

``tests/`` is on ``sys.path`` during pytest (the rootdir conftest; there is no
``tests/__init__.py``), so every test folder imports ``support`` alike. A child process gets
it through ``paths.support_env`` (``tests/`` on ``PYTHONPATH``); Ray actors do not import it
at all — the tests ship the envs they need by value (see ``toy_env``).

- ``toy_env``: the first-letter toy reasoning env (``k15test/FirstLetter-v0``) and
  ``write_toy_experiment`` (an experiment YAML on it).
- ``faulty_env``: the toy env whose scoring blocks on request (``k15test/HoldingFirstLetter-v0``).
- ``toy_training``: K15Configs on the toy env and a tiny model (``toy_config``,
  ``learning_config``, ``learning_run_config``, ``exact_toy_config``) and running them
  (``policy_weights``, ``train_with_weights``).
- ``segments``: partial-rollout segments driven over iterations until every response ends.
- ``learner_harness``: a K15 learner built alone on the tiny model, and a random train batch.
- ``l2s_tiny``: tiny in-process models and tokenizers of the long2short / offline tests.
- ``runs``: the crash tests' child ``k15`` / ``rllib`` processes (start, SIGKILL at a hold
  point, read what they left).
- ``train_harness``: the child-process entry those start (``python -m support.train_harness``).
- ``vllm_product_path``: the child-process body of test_learning's vLLM product-path test.
- ``paths``: ``TESTS_DIR``, ``REPO_DIR``; ``support_env``, ``support_command`` (children);
  ``load_experiment`` (an ``experiments/`` script imported by its path).
"""
