"""Child-process body of test_learning.py::test_product_path_with_vllm_engine.

    python tests/algorithm/vllm_product_path.py MODEL_DIR
"""

import sys

import torch
from test_learning import _config, _train

if __name__ == "__main__":
    results, before, after = _train(_config("vllm", sys.argv[1]), iterations=3)
    accuracy = [r["k15"]["accuracy"] for r in results]
    assert max(accuracy[1:]) > accuracy[0], accuracy
    for result in results:
        # engine and learner score the same tokens with the same (synced) fp32 weights
        assert result["learners"]["logp_mismatch_mean_abs"] < 0.05, result["learners"]
        assert result["env_runners"]["generated_tokens"] > 0
    assert any(not torch.equal(before[k], after[k]) for k in before)
    print("PRODUCT PATH OK", accuracy)
