"""PyTorch arm of the study: the published CNN (``cnn.py``, arm ``cnn_arm.py``), its training
loop and SHAP maps, and what a PyTorch arm shares (``model.py``, ``arm.py``)."""
