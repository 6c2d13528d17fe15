"""Handwriting synthesis with an HM-LSTM (or LSTM) stack, Graves' soft attention window and a mixture
density output (Graves 2013, arXiv 1308.0850; Chung, Ahn & Bengio 2017 §4.2).

  data.py    IAM-OnDB loader (original lineStrokes XML + ascii layout, folders or tar; or the aligned npz),
             official splits, preprocessing (pen offsets, outlier handling, normalisation, alignment)
  model.py   the synthesis network, the mixture loss and its model file (hmgen.modelfile)
  sample.py  synthesis: bias, priming (styles), termination
  styles.py  simple measurements of a hand, and the choice of a style bank from real lines
  render.py  layout, SVG and a small PNG rasteriser
  train.py   the training task behind `hmgen train iam:DIR` (hmgen.training.loop runs it)
  evaluate.py  `hmgen eval iam:DIR`: NLL and operation rates on a split
  defaults.py  what `hmgen handwrite` does without options
  calibrate.py a trained model's detector biases, set once on many training lines (when bundling)
  bundle.py  a run's best model into models/, with its test figures and style bank
"""
