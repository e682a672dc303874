"""tmrl_vla: fine-tune pretrained VLA policies with CSP + TMRL."""

__version__ = "0.1.0"
