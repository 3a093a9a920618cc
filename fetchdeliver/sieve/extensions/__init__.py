"""One module per Sieve extension; see fetchdeliver.sieve.registry for the API."""
