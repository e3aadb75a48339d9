"""Serving a policy: ``k15 serve`` (Ray Serve LLM + vLLM, OpenAI-compatible API).

- ``sources``: what SOURCE names (run directory, RLlib checkpoint, model) as HF weights;
- ``app``: the Ray Serve application (``ray.serve.llm`` on vLLM; CPU or GPU by config);
- ``ingress``: the OpenAI ingress plus a health route, a ``max_tokens`` cap and provenance;
- ``watch``: in-place weight swaps from a training run's new checkpoints (``--watch``).

Heavy imports (Ray Serve, vLLM) happen inside functions.
"""
