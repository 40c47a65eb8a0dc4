"""PyTorch arms of the study: the published CNN (``cnn.py``, arm ``cnn_arm.py``) and ResNet50 laid
out as Keras's with the Keras arm's backbone weights (``resnet50.py``, ``weights.py``, arm
``resnet50_arm.py``), their training loops, SHAP maps and what both arms share (``model.py``,
``arm.py``)."""
