"""How a model runs on this machine: the precision policy (a decision as data), the CPU's capabilities,
bf16 timing and its cache, host memory, and the packed / int8 CPU kernels.

Below the engine, inference and deploy, above models and data: it builds nothing, it decides how what
was built runs.
"""
