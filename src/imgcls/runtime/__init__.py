"""What training and inference both run: the model executed under a plan (``plan``:
device, precision, memory format, chosen by measurement) and the forward pass over batches
(``forward``: logits, features, test-time augmentation)."""
