# No commands at all: only the implicit keep happens.
