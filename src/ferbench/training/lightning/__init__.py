"""The Lightning loop: one model per fold (a classifier or a detector), its Trainer, callbacks and the shared
LightningModule base."""
