"""Training recipes configs pin, so results made with an older default keep a command that
reproduces them."""


def pin_v1(c, *, max_steps: int, patience: int):
  """Recipe v1 (before issue 13's ablations): at most ``max_steps`` steps, early stopping on
  validation accuracy from the first evaluation with ``patience``, no minimum, AdamW with a
  constant decoupled decay of 1e-4, batches of 32 evaluated every 25 steps, top-k selection."""
  c.selector = "top_k"
  c.train.update(max_steps=max_steps, min_steps=0, min_epochs=0.0, early_stopping="accuracy",
                 decay="decoupled", weight_decay_scale="constant", weight_decay=1e-4,
                 batch_size=32, eval_every=25, patience=patience)
  return c
