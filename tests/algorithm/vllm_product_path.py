"""Child-process body of test_learning.py::test_product_path_with_vllm_engine.

python tests/algorithm/vllm_product_path.py MODEL_DIR
"""

import sys

import torch
from test_learning import _config, _train

if __name__ == "__main__":
    # fp32 learner (the engine is fp32 in _config): the log-prob check below compares them
    config = _config("vllm", sys.argv[1], autocast_bf16=False)
    results, before, after = _train(config, iterations=3)
    accuracy = [r["k15"]["accuracy"] for r in results]
    assert max(accuracy[1:]) > accuracy[0], accuracy
    for result in results:
        # engine and learner score the same tokens with the same (synced) fp32 weights:
        # float rounding only (vLLM vs transformers fp32: max 4e-5 per token, test_vllm_engine)
        assert result["learners"]["logp_mismatch_mean_abs"] < 1e-3, result["learners"]
        assert result["env_runners"]["generated_tokens"] > 0
    assert any(not torch.equal(before[k], after[k]) for k in before)
    print("PRODUCT PATH OK", accuracy)
