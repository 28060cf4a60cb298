"""Recipe model section -> checked graph -> keras.Model, plus renderings of it."""
