"""Persistent stores: the per-recording Zarr v3 store (:mod:`.recording`)."""
