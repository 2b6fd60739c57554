"""Integrations with training frameworks: Hugging Face Transformers (and PEFT), Lightning.

The core library needs only torch; `apply` and `remove` load the integration of a framework
that is imported already (frameworks.py). Users import an integration for its helpers, e.g.
``from weight_compander.integrations import transformers as wc_hf``.
"""
