"""Vector index backends: they know vectors and integer ids, nothing about models or metadata."""
