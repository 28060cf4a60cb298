"""Recipe text -> validated `Recipe` (load, compose, schema, locate)."""
