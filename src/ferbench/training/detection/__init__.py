"""Detection training (``model.task=detection``): SimOTA label assignment, YOLOX's losses, detection metrics and the
LightningModule the Lightning loop fits; the factory's ``TASKS["detection"]`` builds it with its data."""
