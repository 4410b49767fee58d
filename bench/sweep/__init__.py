"""What a sweep is made of: the cases and their axes (models, attention implementations, precisions, compile modes)
and the options that choose them."""
