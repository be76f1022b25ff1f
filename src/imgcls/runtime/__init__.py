"""What training and inference both run on an image: decoding it (``images``: the one
guarded open and the conversion rule), preparing it (``preprocess``: the preprocessing that
travels with the weights, and the calibrated probabilities), executing the model under a
plan (``plan``: device, precision, memory format) and the forward pass over batches
(``forward``: logits, features, test-time augmentation). Nothing here imports the data
sets, the models or anything above them."""
