"""Executors: where the library's units of work run. Each module imports its scheduler
(Ray, ...) itself, at use; importing this package imports none of them."""
