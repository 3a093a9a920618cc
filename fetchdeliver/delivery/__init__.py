"""Deliverers: they only store or send. Each returns a Receipt once the result is durable."""
