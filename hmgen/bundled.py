"""The kinds of bundled model and the default of each. No imports: the CLI shows them in --help at no cost
(hmgen.modelfile, which finds the models, would add to every command's start-up)."""

TEXT, HANDWRITING = "text", "handwriting"
DEFAULT = {TEXT: "english-small-3", HANDWRITING: "handwriting-small-3"}
