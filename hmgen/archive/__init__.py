"""The .hmz format and the files and streams of compress/decompress."""
