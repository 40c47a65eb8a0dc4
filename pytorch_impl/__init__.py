"""PyTorch arm of the study: the published CNN, its training loop and its SHAP maps."""
