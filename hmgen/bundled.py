"""The kinds of bundled model and the default of each. No imports: the CLI shows them in --help at no cost
(hmgen.modelio, which loads the models, takes ~55 ms to import)."""

TEXT, HANDWRITING = "text", "handwriting"
DEFAULT = {TEXT: "english-small-3", HANDWRITING: "handwriting-small-2"}
