"""The durable SQLite buffer: records, sealed batches, acks, media bookkeeping."""
