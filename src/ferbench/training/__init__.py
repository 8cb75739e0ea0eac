"""Training: the LightningModule, losses, the data module and callbacks."""
