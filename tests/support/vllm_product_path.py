"""Child-process body of test_learning.py::test_product_path_with_vllm_engine.

PYTHONPATH=tests python -m support.vllm_product_path MODEL_DIR
"""

import sys

import torch

from support.toy_training import learning_run_config, train_with_weights

if __name__ == "__main__":
    # fp32 learner (the engine is fp32 in learning_run_config): the log-prob check below
    # compares them
    config = learning_run_config("vllm", sys.argv[1], autocast_bf16=False)
    results, before, after = train_with_weights(config, iterations=3)
    accuracy = [r["k15"]["accuracy"] for r in results]
    assert max(accuracy[1:]) > accuracy[0], accuracy
    for result in results:
        # engine and learner score the same tokens with the same (synced) fp32 weights:
        # float rounding only (vLLM vs transformers fp32: max 4e-5 per token, test_vllm_engine)
        assert result["learners"]["logp_mismatch_mean_abs"] < 1e-3, result["learners"]
        assert result["env_runners"]["generated_tokens"] > 0
    assert any(not torch.equal(before[k], after[k]) for k in before)
    print("PRODUCT PATH OK", accuracy)
