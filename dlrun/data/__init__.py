"""Data: sources (arrays by name) -> prepared splits mapped onto model inputs and outputs."""
